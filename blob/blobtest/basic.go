package blobtest

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/qim-im/qim/blob"
)

func testRoundTrip(t *testing.T, s blob.Store) {
	data := allBytes(70000)
	mustPut(t, s, "c/ab/abcdef", data, "image/jpeg")
	wantObject(t, s, "c/ab/abcdef", data, "image/jpeg")
	// Put ignores Info.Size: the size is its own argument.
	err := s.Put(t.Context(), "c/x", bytes.NewReader(data[:10]), 10, blob.Info{Size: 99, ContentType: "image/png"})
	if err != nil {
		t.Fatalf("Put with a different Info.Size: %v", err)
	}
	wantObject(t, s, "c/x", data[:10], "image/png")
}

func testEmpty(t *testing.T, s blob.Store) {
	// The empty access markers under "r/...".
	mustPut(t, s, "r/u1/abc", nil, "")
	wantObject(t, s, "r/u1/abc", nil, blob.DefaultContentType)
	err := s.Put(t.Context(), "r/u1/def", strings.NewReader(""), 0, blob.Info{ContentType: "text/plain"})
	if err != nil {
		t.Fatalf("Put empty: %v", err)
	}
	wantObject(t, s, "r/u1/def", nil, "text/plain")
}

func testContentTypes(t *testing.T, s blob.Store) {
	for i, ct := range []string{
		"image/jpeg",
		"image/png",
		"image/webp",
		"text/plain; charset=utf-8",
		"application/x-Mixed.Case+xml",
		strings.Repeat("a", blob.MaxContentTypeLen),
	} {
		key := "ct/" + string(rune('a'+i))
		mustPut(t, s, key, []byte(ct), ct)
		wantObject(t, s, key, []byte(ct), ct)
	}
	mustPut(t, s, "ct/default", []byte("x"), "")
	wantObject(t, s, "ct/default", []byte("x"), blob.DefaultContentType)
}

func testReplace(t *testing.T, s blob.Store) {
	mustPut(t, s, "c/k", []byte("first, longer version"), "image/png")
	mustPut(t, s, "c/k", []byte("second"), "image/jpeg")
	wantObject(t, s, "c/k", []byte("second"), "image/jpeg")
	mustPut(t, s, "c/k", nil, "")
	wantObject(t, s, "c/k", nil, blob.DefaultContentType)
}

// testFlatNamespace checks that keys that are prefixes of each other, as
// paths or as strings, name unrelated objects.
func testFlatNamespace(t *testing.T, s blob.Store) {
	keys := []string{"a", "a/b", "a/b/c", "a.b", "a/b.c", "ab", "a-", "a=", "b/a"}
	for _, k := range keys {
		mustPut(t, s, k, []byte("object "+k), "text/plain")
	}
	for _, k := range keys {
		wantObject(t, s, k, []byte("object "+k), "text/plain")
	}
	// Deleting one leaves its neighbours.
	for _, gone := range []string{"a/b", "a"} {
		if err := s.Delete(t.Context(), gone); err != nil {
			t.Fatalf("Delete(%q): %v", gone, err)
		}
		wantMissing(t, s, gone)
	}
	for _, k := range []string{"a/b/c", "a.b", "a/b.c", "ab", "b/a"} {
		wantObject(t, s, k, []byte("object "+k), "text/plain")
	}
	wantMissing(t, s, "b")
	wantMissing(t, s, "a/b/c/d")
}

// testLongKeys checks the longest valid keys and segments.
func testLongKeys(t *testing.T, s blob.Store) {
	seg := strings.Repeat("s", blob.MaxSegmentLen)
	long := seg + "/" + seg + "/" + strings.Repeat("t", blob.MaxKeyLen-2*blob.MaxSegmentLen-2)
	many := strings.Repeat("a/", blob.MaxKeyLen/2-1) + "zz"
	for _, key := range []string{seg, long, many, "c/" + seg} {
		if !blob.ValidKey(key) {
			t.Fatalf("test key of %d bytes is not valid", len(key))
		}
		mustPut(t, s, key, []byte(key[:10]), "text/plain")
		wantObject(t, s, key, []byte(key[:10]), "text/plain")
	}
}

func testNotFound(t *testing.T, s blob.Store) {
	wantMissing(t, s, "c/missing")
	wantMissing(t, s, "missing")
	mustPut(t, s, "c/present", []byte("x"), "")
	wantMissing(t, s, "c/present2")
	wantMissing(t, s, "c/present/deeper")
	wantMissing(t, s, "c")
}

func testDelete(t *testing.T, s blob.Store) {
	ctx := t.Context()
	if err := s.Delete(ctx, "c/never"); err != nil {
		t.Errorf("Delete of a missing key: %v", err)
	}
	if err := s.Delete(ctx, "never/in/any/dir"); err != nil {
		t.Errorf("Delete of a missing key under missing prefixes: %v", err)
	}
	mustPut(t, s, "c/d", []byte("data"), "")
	mustPut(t, s, "c/e", []byte("kept"), "")
	if err := s.Delete(ctx, "c/d"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantMissing(t, s, "c/d")
	wantObject(t, s, "c/e", []byte("kept"), blob.DefaultContentType)
	if err := s.Delete(ctx, "c/d"); err != nil {
		t.Errorf("second Delete: %v", err)
	}
	// The key can be used again.
	mustPut(t, s, "c/d", []byte("again"), "")
	wantObject(t, s, "c/d", []byte("again"), blob.DefaultContentType)
}

// testClosed checks that every method returns ErrClosed after Close.
func testClosed(t *testing.T, s blob.Store) {
	ctx := t.Context()
	mustPut(t, s, "c/k", []byte("x"), "")
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	err := s.Put(ctx, "c/k2", bytes.NewReader([]byte("y")), 1, blob.Info{})
	if !errors.Is(err, blob.ErrClosed) {
		t.Errorf("Put after Close: %v, want ErrClosed", err)
	}
	if rc, _, err := s.Get(ctx, "c/k"); !errors.Is(err, blob.ErrClosed) {
		if err == nil {
			rc.Close()
		}
		t.Errorf("Get after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Stat(ctx, "c/k"); !errors.Is(err, blob.ErrClosed) {
		t.Errorf("Stat after Close: %v, want ErrClosed", err)
	}
	if err := s.Delete(ctx, "c/k"); !errors.Is(err, blob.ErrClosed) {
		t.Errorf("Delete after Close: %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil && !errors.Is(err, blob.ErrClosed) {
		t.Errorf("second Close: %v, want nil or ErrClosed", err)
	}
}

// testReaderOutlivesClose checks that a reader returned by Get before Close
// still reads the whole object after it.
func testReaderOutlivesClose(t *testing.T, s blob.Store) {
	data := allBytes(300 << 10)
	mustPut(t, s, "c/open", data, "image/png")
	rc, _, err := s.Get(t.Context(), "c/open")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	defer rc.Close()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	got := new(bytes.Buffer)
	if _, err := got.ReadFrom(rc); err != nil {
		t.Fatalf("read after Close: %v", err)
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Errorf("read %d bytes after Close, want the %d bytes stored", got.Len(), len(data))
	}
}

// Package blobtest is the conformance suite of blob.Store: every backend
// runs Run (and, if it persists across restarts, RunReopen) from its tests.
//
//	func TestConformance(t *testing.T) {
//		blobtest.Run(t, func(t *testing.T) blob.Store {
//			s, err := mybackend.Open(t.TempDir())
//			if err != nil {
//				t.Fatal(err)
//			}
//			return s
//		})
//	}
package blobtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/qim-im/qim/blob"
)

// Run runs the conformance suite as subtests of t. open must return a new,
// empty store each time it is called; Run closes it when the subtest ends.
func Run(t *testing.T, open func(t *testing.T) blob.Store) {
	for _, tt := range []struct {
		name string
		test func(t *testing.T, s blob.Store)
	}{
		{"RoundTrip", testRoundTrip},
		{"Empty", testEmpty},
		{"ContentTypes", testContentTypes},
		{"Replace", testReplace},
		{"FlatNamespace", testFlatNamespace},
		{"LongKeys", testLongKeys},
		{"NotFound", testNotFound},
		{"Delete", testDelete},
		{"SizeMismatch", testSizeMismatch},
		{"InvalidKeys", testInvalidKeys},
		{"InvalidContentTypes", testInvalidContentTypes},
		{"ReaderFails", testReaderFails},
		{"ContextEnded", testContextEnded},
		{"ContextEndsMidway", testContextEndsMidway},
		{"ConcurrentPuts", testConcurrentPuts},
		{"ConcurrentKeys", testConcurrentKeys},
		{"Large", testLarge},
		{"Closed", testClosed},
		{"ReaderOutlivesClose", testReaderOutlivesClose},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() { closeStore(t, s) })
			tt.test(t, s)
		})
	}
}

// InvalidKeys returns keys that blob.ValidKey refuses and every backend
// must refuse with blob.ErrInvalidKey: path tricks, bytes outside the
// alphabet, and lengths over the limits.
func InvalidKeys() []string {
	return []string{
		"",
		".",
		"..",
		"../x",
		"a/../b",
		"a/..",
		"a/./b",
		"./a",
		"/a",
		"a/",
		"/",
		"a//b",
		"a\\b",
		"..\\x",
		"a\x00b",
		"\x00",
		"a b",
		"a\nb",
		"a,blob",
		"~",
		"a%2fb",
		"a?b",
		"a#b",
		"é",
		"a/ü/b",
		"日本",
		"\xff",
		strings.Repeat("a", blob.MaxKeyLen+1),
		strings.Repeat("a/", blob.MaxKeyLen/2) + "a",
		strings.Repeat("a", blob.MaxSegmentLen+1),
		"c/" + strings.Repeat("b", blob.MaxSegmentLen+1),
	}
}

func closeStore(t *testing.T, s blob.Store) {
	t.Helper()
	if err := s.Close(); err != nil && !errors.Is(err, blob.ErrClosed) {
		t.Errorf("Close: %v", err)
	}
}

// mustPut stores data under key.
func mustPut(t *testing.T, s blob.Store, key string, data []byte, contentType string) {
	t.Helper()
	err := s.Put(t.Context(), key, bytes.NewReader(data), int64(len(data)), blob.Info{ContentType: contentType})
	if err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
}

// readAll reads the object stored under key with Get.
func readAll(t *testing.T, s blob.Store, key string) ([]byte, blob.Info, error) {
	t.Helper()
	rc, info, err := s.Get(t.Context(), key)
	if err != nil {
		return nil, info, err
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return nil, info, fmt.Errorf("read: %w", err)
	}
	return data, info, nil
}

// wantObject checks that Get and Stat return data and contentType under
// key.
func wantObject(t *testing.T, s blob.Store, key string, data []byte, contentType string) {
	t.Helper()
	want := blob.Info{Size: int64(len(data)), ContentType: contentType}
	got, info, err := readAll(t, s, key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	if !bytes.Equal(got, data) {
		t.Errorf("Get(%q) read %d bytes %q, want %d bytes %q", key, len(got), trunc(got), len(data), trunc(data))
	}
	if info != want {
		t.Errorf("Get(%q) info %+v, want %+v", key, info, want)
	}
	info, err = s.Stat(t.Context(), key)
	if err != nil {
		t.Fatalf("Stat(%q): %v", key, err)
	}
	if info != want {
		t.Errorf("Stat(%q) = %+v, want %+v", key, info, want)
	}
}

// wantMissing checks that Get and Stat return blob.ErrNotFound for key.
func wantMissing(t *testing.T, s blob.Store, key string) {
	t.Helper()
	if rc, _, err := s.Get(t.Context(), key); !errors.Is(err, blob.ErrNotFound) {
		if err == nil {
			rc.Close()
		}
		t.Errorf("Get(%q): %v, want ErrNotFound", key, err)
	}
	if _, err := s.Stat(t.Context(), key); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Stat(%q): %v, want ErrNotFound", key, err)
	}
}

// trunc shortens data for an error message.
func trunc(data []byte) []byte {
	if len(data) > 32 {
		return data[:32]
	}
	return data
}

// allBytes returns n bytes cycling through every byte value.
func allBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

// errBroken is the error of a reader that fails.
var errBroken = errors.New("blobtest: broken reader")

// failingReader yields data and then fails with errBroken instead of
// ending.
func failingReader(data []byte) io.Reader {
	return io.MultiReader(bytes.NewReader(data), errReader{})
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errBroken }

// cancellingReader yields data in chunks of at most chunk bytes, and calls
// cancel after the first chunk.
type cancellingReader struct {
	data   []byte
	chunk  int
	cancel context.CancelFunc
	reads  int
}

func (r *cancellingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	if r.reads == 1 {
		r.cancel()
	}
	r.reads++
	n := copy(p[:min(len(p), r.chunk)], r.data)
	r.data = r.data[n:]
	return n, nil
}

package dirblob

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qim-im/qim/blob"
)

func openTest(t *testing.T, dir string, log *slog.Logger) *Store {
	t.Helper()
	s, err := Open(dir, Options{Logger: log})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestFileFormat checks the documented layout: the key's file, its header
// line, then the bytes.
func TestFileFormat(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, nil)
	data := []byte("\x00\x01binary\n")
	if err := s.Put(t.Context(), "c/ab/cdef", bytes.NewReader(data), int64(len(data)), blob.Info{ContentType: "image/png"}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "c", "ab", "cdef,blob"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "qimblob1 9 image/png\n" + string(data); string(b) != want {
		t.Errorf("file holds %q, want %q", b, want)
	}
	if names, _ := os.ReadDir(filepath.Join(dir, tmpDir)); len(names) != 0 {
		t.Errorf("%s holds %d files after Put", tmpDir, len(names))
	}
}

func TestParseHeader(t *testing.T) {
	for _, tt := range []struct {
		in   string
		info blob.Info
		hlen int64
		ok   bool
	}{
		{"qimblob1 10 image/png\nrest", blob.Info{Size: 10, ContentType: "image/png"}, 22, true},
		{"qimblob1 0 text/plain; charset=utf-8\n", blob.Info{Size: 0, ContentType: "text/plain; charset=utf-8"}, 37, true},
		{"", blob.Info{}, 0, false},
		{"qimblob1 10 image/png", blob.Info{}, 0, false}, // no newline
		{"qimblob2 10 image/png\n", blob.Info{}, 0, false},
		{"qimblob1 -1 image/png\n", blob.Info{}, 0, false},
		{"qimblob1 x image/png\n", blob.Info{}, 0, false},
		{"qimblob1 10\n", blob.Info{}, 0, false},
		{"qimblob1 10 \n", blob.Info{}, 0, false},
		{"qimblob1 10 image/\x01\n", blob.Info{}, 0, false},
	} {
		info, hlen, err := parseHeader([]byte(tt.in))
		if tt.ok != (err == nil) || info != tt.info || hlen != tt.hlen {
			t.Errorf("parseHeader(%q) = %+v, %d, %v; want %+v, %d, ok %v", tt.in, info, hlen, err, tt.info, tt.hlen, tt.ok)
		}
		if err != nil && !errors.Is(err, errCorrupt) {
			t.Errorf("parseHeader(%q): %v, want errCorrupt", tt.in, err)
		}
	}
	// What header writes, parseHeader reads.
	h := header(1234, "image/jpeg")
	info, hlen, err := parseHeader(h)
	if err != nil || info != (blob.Info{Size: 1234, ContentType: "image/jpeg"}) || hlen != int64(len(h)) {
		t.Errorf("parseHeader(header(...)) = %+v, %d, %v", info, hlen, err)
	}
	if long := header(1<<62, strings.Repeat("a", blob.MaxContentTypeLen)); len(long) > maxHeaderLen {
		t.Errorf("longest header is %d bytes, over maxHeaderLen %d", len(long), maxHeaderLen)
	}
}

// TestCorruptFile checks that Get and Stat report a damaged object file as
// corrupt, not as a shorter object or as missing.
func TestCorruptFile(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, nil)
	for name, content := range map[string]string{
		"truncated": "qimblob1 10 image/png\n12345",
		"longer":    "qimblob1 2 image/png\n12345",
		"noheader":  "\xff\xd8\xff\xe0 a bare jpeg",
		"empty":     "",
	} {
		if err := os.WriteFile(filepath.Join(dir, name+objectExt), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if rc, _, err := s.Get(t.Context(), name); !errors.Is(err, errCorrupt) {
			if err == nil {
				rc.Close()
			}
			t.Errorf("Get(%q): %v, want errCorrupt", name, err)
		}
		if _, err := s.Stat(t.Context(), name); !errors.Is(err, errCorrupt) {
			t.Errorf("Stat(%q): %v, want errCorrupt", name, err)
		}
	}
}

// TestTempCleanup checks that Open removes what a crash left in the
// temporary directory, and nothing else.
func TestTempCleanup(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(t.Context(), "c/kept", strings.NewReader("kept"), 4, blob.Info{}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// A crash in the middle of Puts: temporary files, one of them in a
	// directory that should not be there either.
	for _, name := range []string{"123abc", "zzz", "sub/deeper"} {
		p := filepath.Join(dir, tmpDir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("qimblob1 100 image/png\npartial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	var logged bytes.Buffer
	s = openTest(t, dir, slog.New(slog.NewTextHandler(&logged, nil)))
	if names, err := os.ReadDir(filepath.Join(dir, tmpDir)); err != nil || len(names) != 0 {
		t.Errorf("%s after Open: %d entries, %v; want empty", tmpDir, len(names), err)
	}
	if !strings.Contains(logged.String(), "count=3") {
		t.Errorf("log %q does not report the 3 files removed", logged.String())
	}
	rc, _, err := s.Get(t.Context(), "c/kept")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	rc.Close()
}

// TestGetSeeks checks that the reader Get returns seeks within the object's
// bytes, as http.ServeContent needs, and keeps the object it opened.
func TestGetSeeks(t *testing.T) {
	s := openTest(t, t.TempDir(), nil)
	if err := s.Put(t.Context(), "k", strings.NewReader("0123456789"), 10, blob.Info{}); err != nil {
		t.Fatal(err)
	}
	rc, _, err := s.Get(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	// Replaced and deleted meanwhile: the reader keeps the old bytes.
	if err := s.Put(t.Context(), "k", strings.NewReader("abc"), 3, blob.Info{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(t.Context(), "k"); err != nil {
		t.Fatal(err)
	}
	rs, ok := rc.(io.ReadSeeker)
	if !ok {
		t.Fatalf("%T is not an io.ReadSeeker", rc)
	}
	if n, err := rs.Seek(0, io.SeekEnd); err != nil || n != 10 {
		t.Errorf("Seek to end = %d, %v; want 10", n, err)
	}
	if _, err := rs.Seek(7, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(rs); err != nil || string(b) != "789" {
		t.Errorf("read from 7: %q, %v; want \"789\"", b, err)
	}
}

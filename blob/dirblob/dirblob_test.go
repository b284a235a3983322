package dirblob_test

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/qim-im/qim/blob"
	"github.com/qim-im/qim/blob/blobtest"
	"github.com/qim-im/qim/blob/dirblob"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// open opens a store in dir, failing the test on error.
func open(t *testing.T, dir string) *dirblob.Store {
	t.Helper()
	s, err := dirblob.Open(dir, dirblob.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store { return open(t, t.TempDir()) })
}

func TestReopen(t *testing.T) {
	dir := t.TempDir()
	blobtest.RunReopen(t, func(t *testing.T) blob.Store { return open(t, dir) })
}

// testLogger logs warnings and errors to the test's output.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// put stores data under key in s.
func put(t *testing.T, s blob.Store, key, data string) {
	t.Helper()
	if err := s.Put(t.Context(), key, strings.NewReader(data), int64(len(data)), blob.Info{ContentType: "text/plain"}); err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
}

// get reads the object stored under key in s.
func get(t *testing.T, s blob.Store, key string) string {
	t.Helper()
	rc, _, err := s.Get(t.Context(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %q: %v", key, err)
	}
	return string(b)
}

// TestLock checks that two stores cannot share a directory, and that the
// lock lasts until the last call in progress at Close returns.
func TestLock(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	if s2, err := dirblob.Open(dir, dirblob.Options{}); err == nil {
		s2.Close()
		t.Fatal("second Open of a directory in use succeeded")
	}

	// A Put in progress at Close completes, and keeps the lock until then.
	pr, pw := io.Pipe()
	putErr := make(chan error, 1)
	go func() {
		putErr <- s.Put(t.Context(), "c/slow", pr, 4, blob.Info{})
	}()
	if _, err := pw.Write([]byte("sl")); err != nil { // Put is reading
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if s2, err := dirblob.Open(dir, dirblob.Options{}); err == nil {
		s2.Close()
		t.Fatal("Open succeeded while a Put of the closed store was in progress")
	}
	if _, err := pw.Write([]byte("ow")); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if err := <-putErr; err != nil {
		t.Fatalf("Put in progress at Close: %v", err)
	}

	s = open(t, dir)
	defer s.Close()
	if got := get(t, s, "c/slow"); got != "slow" {
		t.Errorf("object of the Put in progress at Close: %q", got)
	}
}

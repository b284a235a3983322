package pebblestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/qim-im/qim/store"
)

// logLines counts the lines logged through it. Safe for concurrent use.
type logLines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logLines) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for line := range strings.Lines(l.buf.String()) {
		if strings.Contains(line, substr) {
			n++
		}
	}
	return n
}

// sstFault returns a file system whose writes of sstables fail, like a full
// disk, while on is set.
func sstFault(on *atomic.Bool) vfs.FS {
	return errorfs.Wrap(vfs.Default, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if on.Load() && strings.HasSuffix(op.Path, ".sst") && (op.Kind == errorfs.OpCreate || op.Kind == errorfs.OpFileWrite) {
			return errorfs.ErrInjected
		}
		return nil
	}))
}

// TestOpenFlushFailure opens a store whose log must be replayed on a disk
// where Pebble cannot write the flushed table (a full disk): Pebble retried
// that flush for ever, so Open never returned (qimd hung at start, burning
// a core). OpenContext must give up with the error, at once, having logged
// it once or twice, not once per retry.
func TestOpenFlushFailure(t *testing.T) {
	// The failed open leaves Pebble's goroutines parked for good (see
	// OpenContext), so it runs in a child process.
	if os.Getenv("QIM_OPEN_FLUSH_CHILD") == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestOpenFlushFailure$", "-test.v")
		cmd.Env = append(os.Environ(), "QIM_OPEN_FLUSH_CHILD="+t.TempDir())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
		t.Logf("child:\n%s", out)
		return
	}
	dir := os.Getenv("QIM_OPEN_FLUSH_CHILD")
	s := openT(t, dir, Options{})
	if _, err := s.Append(t.Context(), []store.Append{msg("alice", "bob", "1")}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	var fault atomic.Bool
	fault.Store(true)
	var log logLines
	done := make(chan error, 1)
	go func() {
		_, err := OpenContext(context.Background(), dir, Options{FS: sstFault(&fault), Logger: slog.New(slog.NewTextHandler(&log, nil))})
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, errorfs.ErrInjected) {
			fmt.Printf("OpenContext: %v, want the injected error\n", err)
			os.Exit(1)
		}
		fmt.Printf("OpenContext: %v\n", err)
	case <-time.After(10 * time.Second):
		fmt.Printf("OpenContext has not returned after 10 s; %d lines of background errors logged\n", log.count("background error"))
		os.Exit(1)
	}
	if n := log.count("background error"); n > 2 {
		fmt.Printf("%d lines of background errors logged, want at most 2\n", n)
		os.Exit(1)
	}
	os.Exit(0)
}

// TestFlushFailureQuiet makes the flushes of an open store fail: Pebble
// retried at once and logged each attempt (thousands of lines a second).
// The retries must back off, the log must stay short, and Close must not
// wait for the backoff.
func TestFlushFailureQuiet(t *testing.T) {
	var fault atomic.Bool
	var log logLines
	s := openT(t, t.TempDir(), Options{FS: sstFault(&fault), Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if _, err := s.Append(t.Context(), []store.Append{msg("alice", "bob", "1")}); err != nil {
		t.Fatal(err)
	}
	fault.Store(true)
	s.db.AsyncFlush()
	time.Sleep(2 * time.Second)
	if n := log.count("background error"); n < 1 || n > 2 {
		t.Errorf("%d lines of background errors logged in 2 s, want 1 or 2", n)
	}
	start := time.Now()
	s.Close()
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %v", d)
	}
}

// TestOwnerOnly checks that everything the store creates is readable by
// its owner only: Pebble made files 0644 and directories 0755.
func TestOwnerOnly(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s := openT(t, dir, Options{})
	if _, err := s.Append(t.Context(), []store.Append{msg("alice", "bob", "1")}); err != nil {
		t.Fatal(err)
	}
	s.db.Flush()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	n := 0
	filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		info, _ := e.Info()
		if info.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: mode %v", path, info.Mode().Perm())
		}
		n++
		return nil
	})
	if n < 4 {
		t.Errorf("only %d paths in %s", n, dir)
	}
}

// TestDeleteAppRecords writes the application records (with secrets) that
// earlier versions kept, and checks that DeleteAppRecords deletes them and
// nothing else.
func TestDeleteAppRecords(t *testing.T) {
	s := openT(t, t.TempDir(), Options{NoSync: true})
	defer s.Close()
	for _, app := range []string{"org/app", "org/app2", "other/x"} {
		if err := s.db.Set(appKey(app), []byte("secret"), nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Append(t.Context(), []store.Append{msg("alice", "bob", "1")}); err != nil {
		t.Fatal(err)
	}
	n, err := s.DeleteAppRecords(t.Context())
	if err != nil || n != 3 {
		t.Fatalf("DeleteAppRecords = %d, %v; want 3", n, err)
	}
	for _, app := range []string{"org/app", "org/app2", "other/x"} {
		if ok, err := s.has(appKey(app)); ok || err != nil {
			t.Errorf("record of %s still there (%v)", app, err)
		}
	}
	if ms, err := s.Messages(t.Context(), "org/app", "u:alice:bob", 0, 10); err != nil || len(ms) != 1 {
		t.Errorf("Messages after DeleteAppRecords: %d, %v", len(ms), err)
	}
	if n, err := s.DeleteAppRecords(t.Context()); n != 0 || err != nil {
		t.Errorf("second DeleteAppRecords = %d, %v", n, err)
	}
}

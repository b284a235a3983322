package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// prepareDataDir creates the data directory owner-only (0700), tightens
// anything in it that other users could read (with a warning: they may
// have read it already), and checks that the directory takes a write, so
// that a full or read-only disk stops the start with one clear error
// instead of failing halfway.
func prepareDataDir(dir string, logger *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("daemon: data directory: %w", err)
	}
	if n, first, err := tighten(dir); err != nil {
		return fmt.Errorf("daemon: data directory %s: tighten permissions: %w", dir, err)
	} else if n > 0 {
		logger.Warn("the data directory was readable by other users: made it owner-only (0700 directories, 0600 files); if other users could log in, rotate the application secrets (qimd app rotate)",
			"dir", dir, "paths", n, "first", first)
	}
	if err := writeCheck(dir); err != nil {
		return fmt.Errorf("daemon: data directory %s is not writable: %w", dir, err)
	}
	return nil
}

// tighten removes group and other permissions from dir and everything in
// it, and returns how many paths it changed and the first of them.
func tighten(dir string) (n int, first string, err error) {
	err = filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		if perm := info.Mode().Perm(); perm&0o077 != 0 {
			if err := os.Chmod(path, perm&^0o077); err != nil {
				return err
			}
			if n++; n == 1 {
				first = path
			}
		}
		return nil
	})
	return n, first, err
}

// writeCheckSize is how much writeCheck writes: enough that a disk with
// only a few blocks left fails it.
const writeCheckSize = 1 << 20

// writeCheck writes, syncs and removes a file in dir.
func writeCheck(dir string) error {
	f, err := os.CreateTemp(dir, ".write-check-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(make([]byte, writeCheckSize))
	if serr := f.Sync(); err == nil {
		err = serr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// checkStoreSpace checks that the disk of storeDir has room for Pebble to
// flush the log it replays on open (about the size of its .log files), plus
// writeCheckSize. Without it Pebble's open retries the flush for ever.
func checkStoreSpace(storeDir string) error {
	names, err := os.ReadDir(storeDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("daemon: store: %w", err)
	}
	var logs uint64
	for _, e := range names {
		if !strings.HasSuffix(e.Name(), ".log") {
			continue
		}
		if info, err := e.Info(); err == nil {
			logs += uint64(info.Size())
		}
	}
	if logs == 0 {
		return nil
	}
	u, err := vfs.Default.GetDiskUsage(storeDir)
	if err != nil {
		return nil // not supported here: rely on the store's own failure
	}
	if need := logs + writeCheckSize; u.AvailBytes < need {
		return fmt.Errorf("daemon: store %s: not enough disk space to open it: %d KiB free, %d KiB needed to replay its log", storeDir, u.AvailBytes>>10, need>>10)
	}
	return nil
}

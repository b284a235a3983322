package dirblob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path"
	"strconv"

	"github.com/qim-im/qim/blob"
	"github.com/qim-im/qim/blob/internal/upload"
)

// Put stores size bytes from r under key; see blob.Store. It writes them to
// a new file in the temporary directory, behind the header line, syncs the
// file, renames it into place and syncs the directory that holds it, so the
// object is durable when Put returns. Any failure removes the temporary
// file and leaves the previous object, if any, in place.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64, info blob.Info) error {
	if err := upload.Check(key, size, info); err != nil {
		return fmt.Errorf("dirblob: put %q: %w", key, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("dirblob: put %q: %w", key, err)
	}
	if err := s.acquire(); err != nil {
		return fmt.Errorf("dirblob: put %q: %w", key, err)
	}
	defer s.done()

	tmp, f, err := s.createTemp()
	if err != nil {
		return fmt.Errorf("dirblob: put %q: %w", key, err)
	}
	err = writeObject(f, upload.NewReader(ctx, r, size), size, upload.ContentType(info.ContentType))
	if err == nil {
		err = s.mkdirs(parentDir(key))
	}
	if err == nil {
		// The reader ended where it should; the context may have ended
		// since the last read.
		err = ctx.Err()
	}
	if err == nil {
		err = s.root.Rename(tmp, objectPath(key))
	}
	if err != nil {
		if rmErr := s.root.Remove(tmp); rmErr != nil {
			s.log.Warn("dirblob: remove temporary file", "file", tmp, "err", rmErr)
		}
		return fmt.Errorf("dirblob: put %q: %w", key, err)
	}
	if err := s.syncDir(parentDir(key)); err != nil {
		// The object is in place but may not survive a crash.
		return fmt.Errorf("dirblob: put %q: %w", key, err)
	}
	return nil
}

// createTemp creates a new file in the temporary directory and returns its
// name relative to the root.
func (s *Store) createTemp() (string, *os.File, error) {
	for range 10 {
		name := tmpDir + "/" + strconv.FormatUint(rand.Uint64(), 36)
		f, err := s.root.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return "", nil, fmt.Errorf("create temporary file: %w", err)
		}
		return name, f, nil
	}
	return "", nil, errors.New("create temporary file: too many collisions")
}

// writeObject writes the header and the bytes of r to f, syncs f and
// closes it.
func writeObject(f *os.File, r io.Reader, size int64, contentType string) error {
	_, err := f.Write(header(size, contentType))
	if err == nil {
		_, err = io.Copy(f, r)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// mkdirs creates the directory dir (relative to the root) and its parents,
// and makes sure that each one's entry is on stable storage before the
// object that goes in it is.
func (s *Store) mkdirs(dir string) error {
	if dir == "." {
		return nil
	}
	s.dirMu.Lock()
	known := s.synced[dir]
	s.dirMu.Unlock()
	if known {
		return nil
	}
	parent := path.Dir(dir)
	if err := s.mkdirs(parent); err != nil {
		return err
	}
	// Whether this call or another one (or another run) created it, the
	// entry is synced once in this Store's life before it is relied on.
	if err := s.root.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create directory: %w", err)
	}
	if err := s.syncDir(parent); err != nil {
		return err
	}
	s.dirMu.Lock()
	s.synced[dir] = true
	s.dirMu.Unlock()
	return nil
}

// syncDir syncs a directory (relative to the root), making the entries in
// it durable.
func (s *Store) syncDir(dir string) error {
	d, err := s.root.Open(dir)
	return syncOpened(d, err, dir)
}

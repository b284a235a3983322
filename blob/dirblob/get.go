package dirblob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/qim-im/qim/blob"
)

// Get opens the object stored under key; see blob.Store. The reader reads
// the file Get opened: a Put or Delete of the key meanwhile does not change
// what it yields. It also implements io.Seeker and io.ReaderAt over the
// object's bytes (for http.ServeContent).
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, blob.Info, error) {
	f, info, hlen, err := s.open(ctx, key)
	if err != nil {
		return nil, blob.Info{}, fmt.Errorf("dirblob: get %q: %w", key, err)
	}
	return &object{SectionReader: io.NewSectionReader(f, hlen, info.Size), f: f}, info, nil
}

// Stat returns the Info of the object stored under key; see blob.Store.
func (s *Store) Stat(ctx context.Context, key string) (blob.Info, error) {
	f, info, _, err := s.open(ctx, key)
	if err != nil {
		return blob.Info{}, fmt.Errorf("dirblob: stat %q: %w", key, err)
	}
	f.Close()
	return info, nil
}

// Delete removes the object stored under key, if any, and syncs its
// directory; see blob.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	if !blob.ValidKey(key) {
		return fmt.Errorf("dirblob: delete %q: %w", key, blob.ErrInvalidKey)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("dirblob: delete %q: %w", key, err)
	}
	if err := s.acquire(); err != nil {
		return fmt.Errorf("dirblob: delete %q: %w", key, err)
	}
	defer s.done()
	err := s.root.Remove(objectPath(key))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err == nil {
		err = s.syncDir(parentDir(key))
	}
	if err != nil {
		return fmt.Errorf("dirblob: delete %q: %w", key, err)
	}
	return nil
}

// open opens the object file of key and checks its header and length. It
// returns the open file, the object's Info and the header's length.
func (s *Store) open(ctx context.Context, key string) (*os.File, blob.Info, int64, error) {
	if !blob.ValidKey(key) {
		return nil, blob.Info{}, 0, blob.ErrInvalidKey
	}
	if err := ctx.Err(); err != nil {
		return nil, blob.Info{}, 0, err
	}
	if err := s.acquire(); err != nil {
		return nil, blob.Info{}, 0, err
	}
	defer s.done()
	f, err := s.root.Open(objectPath(key))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, blob.Info{}, 0, blob.ErrNotFound
	}
	if err != nil {
		return nil, blob.Info{}, 0, err
	}
	info, hlen, err := readHeader(f)
	if err != nil {
		f.Close()
		return nil, blob.Info{}, 0, err
	}
	return f, info, hlen, nil
}

// readHeader reads the header of an open object file and checks that the
// file holds exactly the bytes it announces.
func readHeader(f *os.File) (blob.Info, int64, error) {
	buf := make([]byte, maxHeaderLen)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return blob.Info{}, 0, err
	}
	info, hlen, err := parseHeader(buf[:n])
	if err != nil {
		return blob.Info{}, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		return blob.Info{}, 0, err
	}
	if !fi.Mode().IsRegular() || fi.Size() != hlen+info.Size {
		return blob.Info{}, 0, errCorrupt
	}
	return info, hlen, nil
}

// object is the reader Get returns.
type object struct {
	*io.SectionReader
	f *os.File
}

// Close closes the object's file.
func (o *object) Close() error {
	return o.f.Close()
}

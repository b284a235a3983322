// Package dirblob is a blob.Store that keeps each object in a file under one
// directory, the default backend of a single qimd.
//
// Guarantees: Put returns only after the object's file and its directory
// entry are synced to stable storage, so an object whose Put returned
// survives a crash of the process or the machine; an object is replaced by
// a rename, so a reader, even after a crash, sees the previous object or
// the new one, never a mix or a partial file. A reader returned by Get keeps
// reading the object it opened even if the key is replaced or deleted. Two
// Stores cannot use one directory at once: Open takes an exclusive lock
// (flock) on it.
//
// Layout of the directory (key "c/ab/cdef" as the example):
//
//	,lock             the lock file
//	,tmp/             objects being written; emptied by Open
//	c/ab/cdef,blob    the object: a header line, then its bytes
//
// Keys hold only a-z A-Z 0-9 "-_.=" and "/" (blob.ValidKey), never ".." and
// never ",", so the key's segments are directories and a file name that no
// other key, and nothing dirblob keeps, can name; "a" and "a/b" can both
// exist ("a,blob" and "a/b,blob"). On top of that every file is reached
// through an os.Root, so not even a symbolic link inside the directory can
// lead out of it.
//
// An object file starts with one line, "qimblob1 SIZE CONTENT-TYPE\n",
// followed by exactly SIZE bytes: the content type is stored with the bytes
// and replaced with them in one rename, with no sidecar file and no
// extended attributes. Get checks the line and the file's length.
//
// Directories that Delete empties are left in place: with qim's keys they
// are few (a fan-out of content hashes) and are reused.
package dirblob

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/qim-im/qim/blob"
)

// Options configures a Store. The zero value is usable.
type Options struct {
	// Logger receives what the Store does outside any call's result: the
	// temporary files Open removed, a temporary file it could not remove.
	// Nil discards.
	Logger *slog.Logger
}

// Store is a blob.Store in a directory. Its methods are safe for
// concurrent use.
type Store struct {
	// Static after construction.
	dir  string
	log  *slog.Logger
	root *os.Root // closed by the last of Close and the calls in progress
	lock *os.File // holds the flock; closed with root

	mu     sync.Mutex
	closed bool // guarded by mu
	users  int  // calls in progress; guarded by mu

	dirMu sync.Mutex
	// synced holds the directories (relative to root) whose entry in
	// their parent is known to be on stable storage. Guarded by dirMu.
	synced map[string]bool
}

var _ blob.Store = (*Store)(nil)

// Open opens the store kept in dir, creating dir if it does not exist. It
// locks dir against other Stores, in this process or another, until Close,
// and removes the temporary files a crash left behind.
func Open(dir string, opts Options) (*Store, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("dirblob: open: %w", err)
	}
	// The directory may be new: make its entry durable before objects in
	// it are.
	if err := syncPath(filepath.Dir(dir)); err != nil {
		return nil, fmt.Errorf("dirblob: open: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("dirblob: open: %w", err)
	}
	lock, err := lockDir(root)
	if err != nil {
		root.Close()
		return nil, fmt.Errorf("dirblob: open %s: %w", dir, err)
	}
	s := &Store{
		dir:    dir,
		log:    log.With("blobdir", dir),
		root:   root,
		lock:   lock,
		synced: map[string]bool{".": true},
	}
	if err := s.cleanTmp(); err != nil {
		s.release()
		return nil, fmt.Errorf("dirblob: open %s: %w", dir, err)
	}
	return s, nil
}

// Close releases the store: calls that start after it return
// blob.ErrClosed. Calls in progress complete; the directory stays locked
// until the last of them returns. Readers returned by Get stay open until
// their caller closes them.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return blob.ErrClosed
	}
	s.closed = true
	last := s.users == 0
	s.mu.Unlock()
	if last {
		return s.release()
	}
	return nil
}

// acquire registers a call in progress, or returns blob.ErrClosed. Every
// successful acquire is followed by one done.
func (s *Store) acquire() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return blob.ErrClosed
	}
	s.users++
	return nil
}

// done ends a call in progress; the last one after Close releases the
// directory.
func (s *Store) done() {
	s.mu.Lock()
	s.users--
	last := s.closed && s.users == 0
	s.mu.Unlock()
	if last {
		if err := s.release(); err != nil {
			s.log.Warn("dirblob: release after close", "err", err)
		}
	}
}

// release unlocks the directory and closes the root. It runs once.
func (s *Store) release() error {
	return errors.Join(s.lock.Close(), s.root.Close())
}

// lockDir takes the exclusive flock of the directory. The lock lasts as
// long as the returned file is open.
func lockDir(root *os.Root) (*os.File, error) {
	f, err := root.OpenFile(lockFile, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, errors.New("lock: directory in use by another store")
		}
		return nil, fmt.Errorf("lock: %w", err)
	}
	return f, nil
}

// cleanTmp creates the temporary directory, or removes what a crash left
// in it.
func (s *Store) cleanTmp() error {
	if err := s.root.Mkdir(tmpDir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create %s: %w", tmpDir, err)
	}
	d, err := s.root.Open(tmpDir)
	if err != nil {
		return err
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return fmt.Errorf("list %s: %w", tmpDir, err)
	}
	for _, name := range names {
		if err := s.root.RemoveAll(tmpDir + "/" + name); err != nil {
			return fmt.Errorf("remove temporary file: %w", err)
		}
	}
	if len(names) > 0 {
		s.log.Info("dirblob: removed temporary files left by a crash", "count", len(names))
	}
	return nil
}

// syncPath syncs the directory at p.
func syncPath(p string) error {
	d, err := os.Open(p)
	return syncOpened(d, err, p)
}

// syncOpened syncs and closes directory d, opened as name with err.
func syncOpened(d *os.File, err error, name string) error {
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", name, err)
	}
	return nil
}

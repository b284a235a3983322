package pebblestore

import (
	"io"
	"os"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// ownerOnlyFS is the operating system's file system with everything the
// store creates readable by its owner only: directories 0700, files 0600.
// Pebble itself creates files 0666 and directories 0755 (less the umask),
// and the store holds every user's messages.
type ownerOnlyFS struct{ vfs.FS }

// Create implements vfs.FS.
func (fs ownerOnlyFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	return ownerOnly(name)(fs.FS.Create(name, category))
}

// OpenReadWrite implements vfs.FS.
func (fs ownerOnlyFS) OpenReadWrite(name string, category vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	return ownerOnly(name)(fs.FS.OpenReadWrite(name, category, opts...))
}

// ReuseForWrite implements vfs.FS.
func (fs ownerOnlyFS) ReuseForWrite(oldname, newname string, category vfs.DiskWriteCategory) (vfs.File, error) {
	return ownerOnly(newname)(fs.FS.ReuseForWrite(oldname, newname, category))
}

// MkdirAll implements vfs.FS.
func (fs ownerOnlyFS) MkdirAll(dir string, _ os.FileMode) error {
	return fs.FS.MkdirAll(dir, 0o700)
}

// Lock implements vfs.FS.
func (fs ownerOnlyFS) Lock(name string) (io.Closer, error) {
	c, err := fs.FS.Lock(name)
	if err == nil {
		os.Chmod(name, 0o600)
	}
	return c, err
}

// Unwrap implements vfs.FS.
func (fs ownerOnlyFS) Unwrap() vfs.FS { return fs.FS }

// ownerOnly returns a function that makes the file just opened at name
// owner-only, for wrapping a vfs.FS call.
func ownerOnly(name string) func(vfs.File, error) (vfs.File, error) {
	return func(f vfs.File, err error) (vfs.File, error) {
		if err != nil {
			return nil, err
		}
		if err := os.Chmod(name, 0o600); err != nil {
			f.Close()
			return nil, err
		}
		return f, nil
	}
}

// Package blob defines where qim keeps uploaded files (the pictures of IMAGE
// messages), behind one narrow interface, and the errors every backend
// returns.
//
// A Store is a flat namespace of immutable objects. The HTTP API (package
// httpapi) decides the keys: content-addressed objects under "c/..." and
// empty access markers under "r/...". Backends: package blob/dirblob (a
// directory of the data directory, the default) and blob/s3blob (an
// S3-compatible bucket, for clusters). Every backend passes the conformance
// suite in blob/blobtest.
package blob

import (
	"context"
	"errors"
	"io"
)

// Errors returned by every backend. Callers compare with errors.Is.
var (
	ErrNotFound = errors.New("blob: not found")
	ErrClosed   = errors.New("blob: closed")
	// ErrInvalidKey is returned for a key that is not ValidKey.
	ErrInvalidKey = errors.New("blob: invalid key")
	// ErrSize is returned by Put when the reader does not yield exactly
	// size bytes.
	ErrSize = errors.New("blob: size mismatch")
)

// Info describes a stored object.
type Info struct {
	Size        int64
	ContentType string
}

// Store keeps objects by key. All methods are safe for concurrent use.
type Store interface {
	// Put stores exactly size bytes read from r under key, with its
	// content type, and returns once the object is durable (synced to
	// stable storage, or acknowledged by the bucket). Readers never see a
	// partial object: until Put returns, Get returns ErrNotFound or the
	// previous object. Putting an existing key replaces it. If r yields
	// fewer or more than size bytes, Put stores nothing and returns
	// ErrSize.
	Put(ctx context.Context, key string, r io.Reader, size int64, info Info) error
	// Get returns the object stored under key for reading, and its Info.
	// The caller closes the reader.
	Get(ctx context.Context, key string) (io.ReadCloser, Info, error)
	// Stat returns an object's Info, or ErrNotFound.
	Stat(ctx context.Context, key string) (Info, error)
	// Delete removes an object. A missing object is not an error.
	Delete(ctx context.Context, key string) error
	// Close releases the store. Calls after Close return ErrClosed.
	Close() error
}

// ValidKey reports whether key can name an object: 1 to 512 bytes of
// a-z A-Z 0-9 and "-_.=", in segments separated by single "/", no segment
// "." or "..", not starting or ending with "/".
func ValidKey(key string) bool {
	if len(key) == 0 || len(key) > 512 {
		return false
	}
	seg := 0
	for i := 0; i <= len(key); i++ {
		if i == len(key) || key[i] == '/' {
			if seg == 0 {
				return false
			}
			s := key[i-seg : i]
			if s == "." || s == ".." {
				return false
			}
			seg = 0
			continue
		}
		c := key[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.', c == '=':
		default:
			return false
		}
		seg++
	}
	return true
}

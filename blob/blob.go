// Package blob defines where qim keeps uploaded files (the pictures of IMAGE
// messages), behind one narrow interface, and the errors every backend
// returns.
//
// A Store is a flat namespace of immutable objects. The HTTP API (package
// httpapi) decides the keys: content-addressed objects under "c/..." and
// empty access markers under "r/...". Keys look like paths, but the
// namespace is flat: "a" and "a/b" are two unrelated objects that can both
// exist. Backends: package blob/dirblob (a directory of the data directory,
// the default) and blob/s3blob (an S3-compatible bucket, for clusters).
// Every backend passes the conformance suite in blob/blobtest.
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
	// ErrInvalidContentType is returned by Put for a content type that is
	// not ValidContentType.
	ErrInvalidContentType = errors.New("blob: invalid content type")
	// ErrSize is returned by Put when size is negative or the reader does
	// not yield exactly size bytes.
	ErrSize = errors.New("blob: size mismatch")
)

// DefaultContentType is the content type that Put stores, and Get and Stat
// report, for an object put with an empty one.
const DefaultContentType = "application/octet-stream"

// Limits of keys and content types.
const (
	// MaxKeyLen is the longest key in bytes.
	MaxKeyLen = 512
	// MaxSegmentLen is the longest segment of a key (the bytes between two
	// "/") in bytes, so that a segment fits a file name on every common
	// file system.
	MaxSegmentLen = 200
	// MaxContentTypeLen is the longest content type in bytes.
	MaxContentTypeLen = 255
)

// Info describes a stored object.
type Info struct {
	// Size is the object's length in bytes. Put ignores it: the size is
	// Put's own argument.
	Size int64
	// ContentType is the object's media type, such as "image/jpeg". See
	// ValidContentType.
	ContentType string
}

// Store keeps objects by key. All methods are safe for concurrent use.
type Store interface {
	// Put stores exactly size bytes read from r under key, with
	// info.ContentType, and returns once the object is durable (synced to
	// stable storage, or acknowledged by the bucket). Readers never see a
	// partial object: until Put returns, Get returns ErrNotFound or the
	// previous object. Putting an existing key replaces it; of concurrent
	// Puts of one key, one wins whole. If r yields fewer or more than
	// size bytes, Put stores nothing and returns ErrSize; if r fails or
	// ctx ends first, Put stores nothing and returns that error (wrapped).
	// Put does not close r.
	Put(ctx context.Context, key string, r io.Reader, size int64, info Info) error
	// Get returns the object stored under key for reading, and its Info,
	// or ErrNotFound. The caller closes the reader. What the reader yields
	// if the object is replaced or deleted while it is open depends on the
	// backend.
	Get(ctx context.Context, key string) (io.ReadCloser, Info, error)
	// Stat returns an object's Info, or ErrNotFound.
	Stat(ctx context.Context, key string) (Info, error)
	// Delete removes an object. A missing object is not an error.
	Delete(ctx context.Context, key string) error
	// Close releases the store. Calls that start after Close return
	// ErrClosed; readers returned by Get stay the caller's to close.
	Close() error
}

// ValidKey reports whether key can name an object: 1 to MaxKeyLen bytes of
// a-z A-Z 0-9 and "-_.=", in segments of at most MaxSegmentLen bytes
// separated by single "/", no segment "." or "..", not starting or ending
// with "/".
func ValidKey(key string) bool {
	if len(key) == 0 || len(key) > MaxKeyLen {
		return false
	}
	seg := 0
	for i := 0; i <= len(key); i++ {
		if i == len(key) || key[i] == '/' {
			if seg == 0 || seg > MaxSegmentLen {
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

// ValidContentType reports whether ct can be stored as a content type: at
// most MaxContentTypeLen bytes of printable ASCII (space to "~"), not
// starting or ending with a space, so that it fits an HTTP header unchanged
// and a one-line record. The empty string is valid and stands for
// DefaultContentType.
func ValidContentType(ct string) bool {
	if len(ct) > MaxContentTypeLen {
		return false
	}
	if ct != "" && (ct[0] == ' ' || ct[len(ct)-1] == ' ') {
		return false
	}
	for i := 0; i < len(ct); i++ {
		if ct[i] < ' ' || ct[i] > '~' {
			return false
		}
	}
	return true
}

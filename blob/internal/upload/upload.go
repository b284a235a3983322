// Package upload holds what every blob backend's Put does the same way: it
// checks Put's arguments and reads a stream that must be exactly the
// announced number of bytes long.
package upload

import (
	"fmt"

	"github.com/qim-im/qim/blob"
)

// Check checks the arguments of blob.Store.Put and returns an error that
// wraps blob.ErrInvalidKey, blob.ErrSize or blob.ErrInvalidContentType.
func Check(key string, size int64, info blob.Info) error {
	if !blob.ValidKey(key) {
		return blob.ErrInvalidKey
	}
	if size < 0 {
		return fmt.Errorf("%w: negative size %d", blob.ErrSize, size)
	}
	if !blob.ValidContentType(info.ContentType) {
		return blob.ErrInvalidContentType
	}
	return nil
}

// ContentType returns the content type to store for ct: ct itself, or
// blob.DefaultContentType for "".
func ContentType(ct string) string {
	if ct == "" {
		return blob.DefaultContentType
	}
	return ct
}

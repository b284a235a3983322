package dirblob

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"

	"github.com/qim-im/qim/blob"
)

// Names in the directory. None of them is a possible key, nor the file of
// one: keys never hold ",".
const (
	lockFile    = ",lock"
	tmpDir      = ",tmp"
	objectExt   = ",blob"
	headerMagic = "qimblob1 "
)

// maxHeaderLen bounds the header line: magic, a size of up to 19 digits, a
// space, the content type and the newline.
const maxHeaderLen = len(headerMagic) + 19 + 1 + blob.MaxContentTypeLen + 1

// errCorrupt is returned for an object file that does not hold a valid
// header and exactly the bytes it announces.
var errCorrupt = errors.New("dirblob: corrupt object file")

// objectPath returns the file of a valid key, relative to the root.
func objectPath(key string) string {
	return key + objectExt
}

// parentDir returns the directory that holds the file of a valid key,
// relative to the root ("." for a key of one segment).
func parentDir(key string) string {
	return path.Dir(key)
}

// header returns the first line of an object file.
func header(size int64, contentType string) []byte {
	return fmt.Appendf(nil, "%s%d %s\n", headerMagic, size, contentType)
}

// parseHeader reads the header at the start of b (the first bytes of an
// object file) and returns the object's Info and the header's length.
func parseHeader(b []byte) (blob.Info, int64, error) {
	end := bytes.IndexByte(b, '\n')
	if end < 0 || !bytes.HasPrefix(b, []byte(headerMagic)) {
		return blob.Info{}, 0, errCorrupt
	}
	rest := string(b[len(headerMagic):end])
	sizeStr, ct, ok := strings.Cut(rest, " ")
	if !ok {
		return blob.Info{}, 0, errCorrupt
	}
	size, err := strconv.ParseInt(sizeStr, 10, 64)
	if err != nil || size < 0 || ct == "" || !blob.ValidContentType(ct) {
		return blob.Info{}, 0, errCorrupt
	}
	return blob.Info{Size: size, ContentType: ct}, int64(end + 1), nil
}

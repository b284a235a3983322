package blob_test

import (
	"strings"
	"testing"

	"github.com/qim-im/qim/blob"
	"github.com/qim-im/qim/blob/blobtest"
)

func TestValidKey(t *testing.T) {
	seg := strings.Repeat("s", blob.MaxSegmentLen)
	for _, key := range []string{
		"a",
		"c/ab/0123456789abcdef",
		"r/user-1/x.y=z_w",
		"...",
		".a/a.",
		seg,
		seg + "/" + seg,
		strings.Repeat("a/", blob.MaxKeyLen/2-1) + "zz",
	} {
		if !blob.ValidKey(key) {
			t.Errorf("ValidKey(%q) = false", key)
		}
	}
	for _, key := range blobtest.InvalidKeys() {
		if blob.ValidKey(key) {
			t.Errorf("ValidKey(%q) = true", key)
		}
	}
}

func TestValidContentType(t *testing.T) {
	for _, ct := range []string{"", "image/jpeg", "text/plain; charset=utf-8", strings.Repeat("a", blob.MaxContentTypeLen)} {
		if !blob.ValidContentType(ct) {
			t.Errorf("ValidContentType(%q) = false", ct)
		}
	}
	for _, ct := range []string{" ", " a", "a ", "a\n", "a\x00", "\x7f", "é", strings.Repeat("a", blob.MaxContentTypeLen+1)} {
		if blob.ValidContentType(ct) {
			t.Errorf("ValidContentType(%q) = true", ct)
		}
	}
}

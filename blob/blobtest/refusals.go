package blobtest

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/qim-im/qim/blob"
)

// testSizeMismatch checks that Put refuses a reader of the wrong length
// with ErrSize and stores nothing, for a new key and for one it would
// replace.
func testSizeMismatch(t *testing.T, s blob.Store) {
	data := allBytes(100 << 10)
	for i, tt := range []struct {
		name string
		data []byte
		size int64
	}{
		{"FewerByOne", data, int64(len(data)) + 1},
		{"Fewer", data[:10], int64(len(data))},
		{"NoneOfSome", nil, 10},
		{"MoreByOne", data, int64(len(data)) - 1},
		{"More", data, 10},
		{"SomeForNone", data[:1], 0},
		{"Negative", data[:1], -1},
	} {
		for _, replace := range []bool{false, true} {
			name := tt.name + "/New"
			key := "c/size-new-" + string(rune('a'+i))
			if replace {
				name = tt.name + "/Replace"
				key = "c/size-old-" + string(rune('a'+i))
				mustPut(t, s, key, []byte("previous"), "text/plain")
			}
			t.Run(name, func(t *testing.T) {
				err := s.Put(t.Context(), key, bytes.NewReader(tt.data), tt.size, blob.Info{ContentType: "image/png"})
				if !errors.Is(err, blob.ErrSize) {
					t.Fatalf("Put of %d bytes as %d: %v, want ErrSize", len(tt.data), tt.size, err)
				}
				if replace {
					wantObject(t, s, key, []byte("previous"), "text/plain")
				} else {
					wantMissing(t, s, key)
				}
			})
		}
	}
}

// testInvalidKeys checks that every method refuses every invalid key.
func testInvalidKeys(t *testing.T, s blob.Store) {
	ctx := t.Context()
	mustPut(t, s, "a/b", []byte("x"), "")
	for _, key := range InvalidKeys() {
		if blob.ValidKey(key) {
			t.Fatalf("ValidKey(%q) = true", key)
		}
		err := s.Put(ctx, key, strings.NewReader("data"), 4, blob.Info{})
		if !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Put(%q): %v, want ErrInvalidKey", key, err)
		}
		if rc, _, err := s.Get(ctx, key); !errors.Is(err, blob.ErrInvalidKey) {
			if err == nil {
				rc.Close()
			}
			t.Errorf("Get(%q): %v, want ErrInvalidKey", key, err)
		}
		if _, err := s.Stat(ctx, key); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Stat(%q): %v, want ErrInvalidKey", key, err)
		}
		if err := s.Delete(ctx, key); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Delete(%q): %v, want ErrInvalidKey", key, err)
		}
	}
	wantObject(t, s, "a/b", []byte("x"), blob.DefaultContentType)
}

// testInvalidContentTypes checks that Put refuses a content type that
// cannot be stored as given, and stores nothing.
func testInvalidContentTypes(t *testing.T, s blob.Store) {
	for _, ct := range []string{
		"image/png\n",
		"image/png\r\nX-Injected: 1",
		"image/\x00png",
		"image/\tpng",
		"image/pngé",
		"\x7f",
		" image/png",
		"image/png ",
		strings.Repeat("a", blob.MaxContentTypeLen+1),
	} {
		if blob.ValidContentType(ct) {
			t.Fatalf("ValidContentType(%q) = true", ct)
		}
		err := s.Put(t.Context(), "c/ct", strings.NewReader("data"), 4, blob.Info{ContentType: ct})
		if !errors.Is(err, blob.ErrInvalidContentType) {
			t.Errorf("Put with content type %q: %v, want ErrInvalidContentType", ct, err)
		}
		wantMissing(t, s, "c/ct")
	}
}

package blobtest

import (
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/qim-im/qim/blob"
)

// largeSize is the size of the object testLarge streams.
const largeSize = 10 << 20

// testLarge streams a 10 MiB object in and out, never holding it whole in
// the test.
func testLarge(t *testing.T, s blob.Store) {
	want := sha256.New()
	if _, err := io.Copy(want, stream(1, largeSize)); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(t.Context(), "c/large", stream(1, largeSize), largeSize, blob.Info{ContentType: "image/jpeg"}); err != nil {
		t.Fatalf("Put: %v", err)
	}
	rc, info, err := s.Get(t.Context(), "c/large")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	defer rc.Close()
	if info != (blob.Info{Size: largeSize, ContentType: "image/jpeg"}) {
		t.Errorf("Get info %+v", info)
	}
	got := sha256.New()
	n, err := io.Copy(got, rc)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if n != largeSize || string(got.Sum(nil)) != string(want.Sum(nil)) {
		t.Errorf("read %d bytes with a different digest, want the %d bytes stored", n, largeSize)
	}
}

// stream returns n pseudo-random bytes determined by seed, as a plain
// io.Reader (no Seek, no WriteTo, no Len), like an upload's body.
func stream(seed uint64, n int64) io.Reader {
	var key [32]byte
	key[0] = byte(seed)
	return struct{ io.Reader }{io.LimitReader(rand.NewChaCha8(key), n)}
}

package blobtest

import (
	"testing"

	"github.com/qim-im/qim/blob"
)

// RunReopen checks that objects survive a restart: it opens a store, puts,
// replaces and deletes objects, closes it, opens it again and checks that
// it holds exactly what the first store held, then that it works. open
// must open the same stored objects each time it is called (the same
// directory, the same bucket and prefix); RunReopen closes what it opens.
func RunReopen(t *testing.T, open func(t *testing.T) blob.Store) {
	s := open(t)
	mustPut(t, s, "c/aa/kept", allBytes(5000), "image/jpeg")
	mustPut(t, s, "c/aa/replaced", []byte("first"), "image/png")
	mustPut(t, s, "c/aa/replaced", []byte("second"), "image/webp")
	mustPut(t, s, "c/bb/deleted", []byte("gone"), "")
	mustPut(t, s, "r/u/marker", nil, "")
	if err := s.Delete(t.Context(), "c/bb/deleted"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = open(t)
	t.Cleanup(func() { closeStore(t, s) })
	wantObject(t, s, "c/aa/kept", allBytes(5000), "image/jpeg")
	wantObject(t, s, "c/aa/replaced", []byte("second"), "image/webp")
	wantObject(t, s, "r/u/marker", nil, blob.DefaultContentType)
	wantMissing(t, s, "c/bb/deleted")
	mustPut(t, s, "c/bb/deleted", []byte("back"), "")
	wantObject(t, s, "c/bb/deleted", []byte("back"), blob.DefaultContentType)
}

package blobtest

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/qim-im/qim/blob"
)

// testReaderFails checks that Put returns the reader's error and stores
// nothing when the reader fails, midway or where it should have ended.
func testReaderFails(t *testing.T, s blob.Store) {
	data := allBytes(200 << 10)
	for i, tt := range []struct {
		name string
		data []byte
	}{
		{"AtStart", nil},
		{"Midway", data[:len(data)/2]},
		{"AtEnd", data},
	} {
		for _, replace := range []bool{false, true} {
			name := tt.name + "/New"
			key := "c/fail-new-" + string(rune('a'+i))
			if replace {
				name = tt.name + "/Replace"
				key = "c/fail-old-" + string(rune('a'+i))
				mustPut(t, s, key, []byte("previous"), "text/plain")
			}
			t.Run(name, func(t *testing.T) {
				err := s.Put(t.Context(), key, failingReader(tt.data), int64(len(data)), blob.Info{ContentType: "image/png"})
				if !errors.Is(err, errBroken) {
					t.Fatalf("Put: %v, want the reader's error", err)
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

// testContextEnded checks that no method acts with a context that has
// ended.
func testContextEnded(t *testing.T, s blob.Store) {
	mustPut(t, s, "c/k", []byte("previous"), "text/plain")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := s.Put(ctx, "c/new", strings.NewReader("data"), 4, blob.Info{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Put new: %v, want context.Canceled", err)
	}
	wantMissing(t, s, "c/new")
	err = s.Put(ctx, "c/k", strings.NewReader("data"), 4, blob.Info{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Put replacing: %v, want context.Canceled", err)
	}
	if rc, _, err := s.Get(ctx, "c/k"); !errors.Is(err, context.Canceled) {
		if err == nil {
			rc.Close()
		}
		t.Errorf("Get: %v, want context.Canceled", err)
	}
	if _, err := s.Stat(ctx, "c/k"); !errors.Is(err, context.Canceled) {
		t.Errorf("Stat: %v, want context.Canceled", err)
	}
	if err := s.Delete(ctx, "c/k"); !errors.Is(err, context.Canceled) {
		t.Errorf("Delete: %v, want context.Canceled", err)
	}
	wantObject(t, s, "c/k", []byte("previous"), "text/plain")
}

// testContextEndsMidway checks that Put stores nothing when its context
// ends while it reads.
func testContextEndsMidway(t *testing.T, s blob.Store) {
	data := allBytes(1 << 20)
	for _, replace := range []bool{false, true} {
		name, key := "New", "c/ctx-new"
		if replace {
			name, key = "Replace", "c/ctx-old"
			mustPut(t, s, key, []byte("previous"), "text/plain")
		}
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			r := &cancellingReader{data: data, chunk: 32 << 10, cancel: cancel}
			err := s.Put(ctx, key, r, int64(len(data)), blob.Info{ContentType: "image/png"})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Put: %v, want context.Canceled", err)
			}
			if replace {
				wantObject(t, s, key, []byte("previous"), "text/plain")
			} else {
				wantMissing(t, s, key)
			}
		})
	}
}

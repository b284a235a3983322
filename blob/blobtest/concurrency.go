package blobtest

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/qim-im/qim/blob"
)

// testConcurrentPuts checks that concurrent Puts of one key leave one of
// the objects whole, and that readers meanwhile see whole objects only.
func testConcurrentPuts(t *testing.T, s blob.Store) {
	const (
		writers = 8
		rounds  = 3
		size    = 256 << 10
	)
	ctx := t.Context()
	contentType := func(b byte) string { return fmt.Sprintf("image/x-%d", b) }
	// check reports whether an object read back is one whole object
	// from a writer.
	check := func(data []byte, info blob.Info) error {
		if len(data) != size || info.Size != size {
			return fmt.Errorf("read %d bytes, Info.Size %d, want %d", len(data), info.Size, size)
		}
		if data[0] >= writers || !bytes.Equal(data, bytes.Repeat(data[:1], size)) {
			return fmt.Errorf("bytes of several writers, or of none")
		}
		if info.ContentType != contentType(data[0]) {
			return fmt.Errorf("content type %q with the bytes of writer %d", info.ContentType, data[0])
		}
		return nil
	}

	var readers sync.WaitGroup
	stop := make(chan struct{})
	for range 2 {
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				data, info, err := readAll(t, s, "c/contended")
				if errors.Is(err, blob.ErrNotFound) {
					continue
				}
				if err != nil {
					t.Errorf("Get during Puts: %v", err)
					return
				}
				if err := check(data, info); err != nil {
					t.Errorf("Get during Puts: %v", err)
					return
				}
			}
		})
	}
	var writersWG sync.WaitGroup
	for w := range writers {
		data := bytes.Repeat([]byte{byte(w)}, size)
		writersWG.Go(func() {
			for range rounds {
				err := s.Put(ctx, "c/contended", bytes.NewReader(data), size, blob.Info{ContentType: contentType(byte(w))})
				if err != nil {
					t.Errorf("Put by writer %d: %v", w, err)
					return
				}
			}
		})
	}
	writersWG.Wait()
	close(stop)
	readers.Wait()

	data, info, err := readAll(t, s, "c/contended")
	if err != nil {
		t.Fatalf("Get after Puts: %v", err)
	}
	if err := check(data, info); err != nil {
		t.Errorf("Get after Puts: %v", err)
	}
}

// testConcurrentKeys runs Puts, Gets and Deletes of distinct keys, some
// under a new common prefix, at once.
func testConcurrentKeys(t *testing.T, s blob.Store) {
	const workers, keys = 8, 10
	ctx := t.Context()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for k := range keys {
				key := fmt.Sprintf("shared/p%d/w%d", k, w)
				data := fmt.Appendf(nil, "worker %d key %d", w, k)
				if err := s.Put(ctx, key, bytes.NewReader(data), int64(len(data)), blob.Info{}); err != nil {
					t.Errorf("Put(%q): %v", key, err)
					return
				}
				got, _, err := readAll(t, s, key)
				if err != nil || !bytes.Equal(got, data) {
					t.Errorf("Get(%q) = %q, %v; want %q", key, got, err, data)
					return
				}
				if k%2 == 0 {
					if err := s.Delete(ctx, key); err != nil {
						t.Errorf("Delete(%q): %v", key, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	for w := range workers {
		for k := range keys {
			key := fmt.Sprintf("shared/p%d/w%d", k, w)
			if k%2 == 0 {
				wantMissing(t, s, key)
			} else {
				wantObject(t, s, key, fmt.Appendf(nil, "worker %d key %d", w, k), blob.DefaultContentType)
			}
		}
	}
}

package bench

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// StoreOptions shapes the store baseline.
type StoreOptions struct {
	Dir      string        // a new directory on the disk the server stores on
	Writers  int           // concurrent committers; 0 means 64
	Size     int           // value bytes; 0 means 256
	Duration time.Duration // 0 means 3s
}

// StoreResult is the store baseline's figure.
type StoreResult struct {
	Commits int64
	Elapsed time.Duration
}

// Rate is synced commits per second.
func (r StoreResult) Rate() float64 { return perSecond(r.Commits, r.Elapsed) }

// StoreBaseline measures what the pair-durable scenario is bounded by: bare
// Pebble, as qim's store opens it, committing one value per batch with
// sync, from Writers goroutines at once (Pebble groups their syncs).
func StoreBaseline(ctx context.Context, o StoreOptions) (StoreResult, error) {
	o.Writers = cmp.Or(o.Writers, 64)
	o.Size = cmp.Or(o.Size, 256)
	o.Duration = cmp.Or(o.Duration, 3*time.Second)
	db, err := pebble.Open(o.Dir, &pebble.Options{
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             quietPebble{},
	})
	if err != nil {
		return StoreResult{}, fmt.Errorf("bench: open pebble: %w", err)
	}
	defer db.Close()
	value := make([]byte, o.Size)
	var (
		commits  atomic.Int64
		firstErr atomic.Pointer[error]
		wg       sync.WaitGroup
	)
	runCtx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()
	start := time.Now()
	for w := range o.Writers {
		wg.Go(func() {
			key := fmt.Appendf(nil, "m\x00w%d\x00", w)
			n := len(key)
			for i := uint64(0); runCtx.Err() == nil; i++ {
				key = binary.BigEndian.AppendUint64(key[:n], i)
				b := db.NewBatch()
				b.Set(key, value, nil)
				if err := b.Commit(pebble.Sync); err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				commits.Add(1)
			}
		})
	}
	wg.Wait()
	res := StoreResult{Commits: commits.Load(), Elapsed: time.Since(start)}
	if p := firstErr.Load(); p != nil {
		return res, fmt.Errorf("bench: pebble commit: %w", *p)
	}
	return res, nil
}

// quietPebble discards Pebble's informational logging.
type quietPebble struct{}

func (quietPebble) Infof(string, ...any)  {}
func (quietPebble) Errorf(string, ...any) {}
func (quietPebble) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

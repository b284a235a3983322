package pebblestore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// dedupBatch is how many dedup entries PruneDedup deletes, and the
// backfill indexes, per synced batch.
const dedupBatch = 1000

// errBatchFull stops a scan whose batch is full.
var errBatchFull = errors.New("pebblestore: batch full")

// PruneDedup implements store.Store. It scans the time index ("dt", see
// keys.go) below before and deletes each entry together with the dedup
// entry it indexes, in synced batches of dedupBatch entries; an error or
// the end of ctx stops it between two batches, and it returns the entries
// deleted so far with the error. Each batch is a call of its own for Close,
// which may come between two (PruneDedup then returns store.ErrClosed).
//
// Calls are serialized by pruneMu. With that, and because Append writes a
// dedup entry only where none exists, with its index entry in the same
// batch, every index entry that the scan finds still indexes the dedup
// entry it was written with: an entry is replaced only after it is deleted,
// and only PruneDedup deletes one. An Append that looks up an id while its
// entry is being pruned finds either the original (a duplicate) or nothing
// (stored again, with new entries), never half of it; seqs are not
// touched.
func (s *Store) PruneDedup(ctx context.Context, before time.Time) (int, error) {
	s.pruneMu.Lock()
	defer s.pruneMu.Unlock()
	// Messages of the millisecond of before are before it if before has a
	// fraction of a millisecond: the bound is before rounded up.
	bound := max(before.Add(time.Millisecond-1).UnixMilli(), 0)
	// Every index key starts with the prefix and a timestamp, so the
	// timestamp alone is a bound below all keys of that millisecond.
	lower := dedupTimePrefix
	upper := keyBuf(slices.Clone(dedupTimePrefix)).u64(uint64(bound))
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		n, next, err := s.pruneBatch(lower, upper)
		total += n
		if err != nil {
			return total, fmt.Errorf("pebblestore: prune dedup: %w", err)
		}
		if next == nil {
			return total, nil
		}
		lower = next
	}
}

// pruneBatch deletes up to dedupBatch time index entries in [lower, upper)
// and their dedup entries, in one synced batch. It returns how many it
// deleted and, if it stopped because the batch was full, the key to resume
// from; later scans skip what this one deleted instead of stepping over its
// tombstones. Entries that a concurrent Append writes below the resume key
// are left to the next call.
func (s *Store) pruneBatch(lower, upper []byte) (n int, next []byte, err error) {
	if err := s.enter(); err != nil {
		return 0, nil, err
	}
	defer s.exit()
	b := s.db.NewBatch()
	err = s.scanRange(lower, upper, 0, func(k, _ []byte) error {
		app, user, clientMsgID, err := parseDedupTimeKey(k)
		if err != nil {
			return err
		}
		b.Delete(dedupKey(app, user, clientMsgID), nil)
		b.Delete(k, nil)
		if n++; n == dedupBatch {
			next = append(slices.Clone(k), sep) // the smallest key after k
			return errBatchFull
		}
		return nil
	})
	if err != nil && !errors.Is(err, errBatchFull) {
		b.Close()
		return 0, nil, err
	}
	if n == 0 {
		return 0, nil, b.Close()
	}
	if err := s.write(b, true); err != nil {
		return 0, nil, err
	}
	return n, next, nil
}

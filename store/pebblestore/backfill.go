package pebblestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// Tenant keys are the range ["a" 0, "a" 1).
var (
	tenantsLower = []byte{'a', sep}
	tenantsUpper = []byte{'a', sep + 1}
)

// backfillDedupIndex gives every dedup entry its time index entry, unless
// the marker "meta" 0 "dedupidx" says that this was done. Data directories
// written before the time index existed hold dedup entries without one,
// which PruneDedup would never find. Open calls it before the Store serves
// any call; a new directory only gets the marker.
//
// It visits the "d" range of every app, skipping the rest of the tenant,
// and writes the index entries in synced batches of dedupBatch, reading each
// original message's Timestamp (0 if the message is missing, so that the
// next PruneDedup forgets the entry). The marker is written last: if Open
// is stopped (ctx, a crash) the next Open starts again, and writes the same
// keys again.
func (s *Store) backfillDedupIndex(ctx context.Context) error {
	done, err := s.has(metaDedupIdxKey)
	if err != nil || done {
		return err
	}
	total := 0
	for from := tenantsLower; from != nil; {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("index dedup entries: %w", err)
		}
		var n int
		n, from, err = s.backfillBatch(from)
		total += n
		if err != nil {
			return fmt.Errorf("index dedup entries: %w", err)
		}
	}
	b := s.db.NewBatch()
	b.Set(metaDedupIdxKey, nil, nil)
	if err := s.write(b, true); err != nil {
		return fmt.Errorf("index dedup entries: %w", err)
	}
	if total > 0 {
		s.logger.Info("pebblestore: indexed the dedup entries of an older data directory by time", "entries", total)
	}
	return nil
}

// backfillBatch indexes up to dedupBatch dedup entries from key from on, in
// one synced batch. It returns how many it indexed and the key to resume
// from, nil at the end of the tenants.
func (s *Store) backfillBatch(from []byte) (n int, next []byte, err error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: tenantsLower, UpperBound: tenantsUpper})
	if err != nil {
		return 0, nil, err
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	b := s.db.NewBatch()
	defer func() {
		if b != nil {
			b.Close()
		}
	}()
	valid := it.SeekGE(from)
	for valid && n < dedupBatch {
		k := it.Key()
		app, ok := tenantOf(k)
		if !ok {
			return 0, nil, fmt.Errorf("pebblestore: corrupt key %q", k)
		}
		dp := tenant(app).add("d").sep()
		switch {
		case bytes.Compare(k, dp) < 0:
			valid = it.SeekGE(dp)
		case bytes.HasPrefix(k, dp):
			user, clientMsgID, ok := bytes.Cut(k[len(dp):], []byte{sep})
			if !ok {
				return 0, nil, fmt.Errorf("pebblestore: corrupt dedup key %q", k)
			}
			v, err := it.ValueAndErr()
			if err != nil {
				return 0, nil, err
			}
			ts, err := s.timestampOf(app, v)
			if err != nil {
				return 0, nil, err
			}
			b.Set(dedupTimeKey(ts, app, string(user), string(clientMsgID)), nil, nil)
			n++
			valid = it.Next()
		default:
			valid = it.SeekGE(prefixEnd(tenant(app)))
		}
	}
	if err := it.Error(); err != nil {
		return 0, nil, err
	}
	if valid {
		next = slices.Clone(it.Key())
	}
	if n > 0 {
		err := s.write(b, true)
		b = nil
		if err != nil {
			return 0, nil, err
		}
	}
	return n, next, nil
}

// tenantOf returns the app of a tenant key.
func tenantOf(k []byte) (app string, ok bool) {
	rest, ok := bytes.CutPrefix(k, tenantsLower)
	if !ok {
		return "", false
	}
	a, _, ok := bytes.Cut(rest, []byte{sep})
	return string(a), ok && len(a) > 0
}

// timestampOf returns the Timestamp of the message a dedup entry (value v)
// points to, or 0 if it is missing.
func (s *Store) timestampOf(app string, v []byte) (int64, error) {
	conv, seq, err := decodeDedup(v)
	if err != nil {
		return 0, err
	}
	mv, err := s.get(msgKey(app, conv, seq))
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	m := new(qimpb.Message)
	if err := proto.Unmarshal(mv, m); err != nil {
		return 0, fmt.Errorf("pebblestore: unmarshal message: %w", err)
	}
	return m.Timestamp, nil
}

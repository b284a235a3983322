package pebblestore

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"slices"
	"strings"

	"github.com/cockroachdb/pebble/v2"

	"github.com/qim-im/qim/store"
)

// Inbox implements store.Store. For a group, a device's Acked is never below
// the user's join point, so a user who left and joined again is not given
// the messages sent while away. A 1:1 conversation whose first message is
// not synced yet is not listed. Conversations are sorted by key.
//
// It reads the user's cursors with three prefix scans (the device's acked
// cursors, the read cursors, the "ro" keys; see keys.go), and, for each
// 1:1 conversation with someone else, seeks the other user's devices'
// cursors and shared read cursor through one iterator.
func (s *Store) Inbox(ctx context.Context, app, user, device string) (out []store.ConvState, err error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.exit()
	if err := checkIDs(app, user, device); err != nil {
		return nil, err
	}

	acked, err := s.scanU64s(cursorPrefix(app, user, device))
	if err != nil {
		return nil, err
	}
	read, err := s.scanU64s(readPrefix(app, user))
	if err != nil {
		return nil, err
	}
	own, err := s.scanU64s(ownReadPrefix(app, user))
	if err != nil {
		return nil, err
	}
	// state returns conv's state but for the peer's cursors.
	state := func(conv string, last, acked uint64) store.ConvState {
		return store.ConvState{Conv: conv, LastSeq: last, Acked: acked, Read: max(read[conv], min(own[conv], last))}
	}

	var convs []string
	err = s.scan(inboxPrefix(app, user), func(conv, _ []byte) error {
		convs = append(convs, string(conv))
		return nil
	})
	if err != nil {
		return nil, err
	}
	var it *pebble.Iterator // over the tenant, for the peers' cursors
	defer func() {
		if it != nil {
			err = errors.Join(err, it.Close())
		}
	}()
	for _, conv := range convs {
		last, err := s.lastSeq(app, conv)
		if err != nil {
			return nil, err
		}
		if last == 0 {
			continue
		}
		c := state(conv, last, acked[conv])
		if peer, ok := directPeer(conv, user); ok {
			if it == nil {
				if it, err = s.tenantIter(app); err != nil {
					return nil, err
				}
			}
			if c.PeerDelivered, _, err = deliveredOf(it, app, peer, conv, math.MaxUint64); err != nil {
				return nil, fmt.Errorf("pebblestore: inbox: %w", err)
			}
			if c.PeerRead, err = seekU64(it, sharedReadKey(app, conv, peer)); err != nil {
				return nil, fmt.Errorf("pebblestore: inbox: %w", err)
			}
		}
		out = append(out, c)
	}

	var groups []string
	err = s.scan(userGroupPrefix(app, user), func(id, _ []byte) error {
		groups = append(groups, string(id))
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, id := range groups {
		join, err := s.get(memberKey(app, id, user))
		if errors.Is(err, store.ErrNotFound) {
			continue // left between the two reads
		}
		if err != nil {
			return nil, err
		}
		joinSeq, _, err := decodeMember(join)
		if err != nil {
			return nil, err
		}
		conv := store.GroupConv(id)
		last, err := s.lastSeq(app, conv)
		if err != nil {
			return nil, err
		}
		out = append(out, state(conv, last, max(acked[conv], joinSeq)))
	}
	slices.SortFunc(out, func(a, b store.ConvState) int { return strings.Compare(a.Conv, b.Conv) })
	return out, nil
}

// scanU64s returns the integers stored under prefix, by the rest of their
// keys.
func (s *Store) scanU64s(prefix []byte) (map[string]uint64, error) {
	out := make(map[string]uint64)
	err := s.scan(prefix, func(rest, v []byte) error {
		n, err := decodeU64(v)
		out[string(rest)] = n
		return err
	})
	return out, err
}

// SetAcked implements store.Store. The write is not synced: it reaches
// stable storage with the next synced write or Close.
func (s *Store) SetAcked(ctx context.Context, app, user, device, conv string, seq uint64) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.exit()
	if err := checkIDs(app, user, device, conv); err != nil {
		return err
	}
	k := cursorKey(app, user, device, conv)
	mu := &s.ackMu[maphash.Bytes(s.ackSeed, k)%uint64(len(s.ackMu))]
	mu.Lock()
	defer mu.Unlock()
	cur, err := s.getU64(k)
	if err != nil || seq <= cur {
		return err
	}
	b := s.db.NewBatch()
	b.Set(k, encodeU64(seq), nil)
	return s.write(b, false)
}

package pebblestore

import (
	"context"
	"errors"
	"hash/maphash"
	"slices"
	"strings"

	"github.com/qim-im/qim/store"
)

// Inbox implements store.Store. For a group, a device's Acked is never below
// the user's join point, so a user who left and joined again is not given
// the messages sent while away. A 1:1 conversation whose first message is
// not synced yet is not listed. Conversations are sorted by key.
func (s *Store) Inbox(ctx context.Context, app, user, device string) ([]store.ConvState, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.exit()
	if err := checkIDs(app, user, device); err != nil {
		return nil, err
	}

	acked := make(map[string]uint64)
	err := s.scan(cursorPrefix(app, user, device), func(conv, v []byte) error {
		seq, err := decodeU64(v)
		acked[string(conv)] = seq
		return err
	})
	if err != nil {
		return nil, err
	}

	var out []store.ConvState
	var convs []string
	err = s.scan(inboxPrefix(app, user), func(conv, _ []byte) error {
		convs = append(convs, string(conv))
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, conv := range convs {
		last, err := s.lastSeq(app, conv)
		if err != nil {
			return nil, err
		}
		if last > 0 {
			out = append(out, store.ConvState{Conv: conv, LastSeq: last, Acked: acked[conv]})
		}
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
		out = append(out, store.ConvState{Conv: conv, LastSeq: last, Acked: max(acked[conv], joinSeq)})
	}
	slices.SortFunc(out, func(a, b store.ConvState) int { return strings.Compare(a.Conv, b.Conv) })
	return out, nil
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

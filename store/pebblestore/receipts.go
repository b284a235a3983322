package pebblestore

import (
	"bytes"
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

// Read cursors, receipts, settings and reverse contact lookups. The keys
// are described in keys.go.

// SetRead implements store.Store. It reads, compares and applies the
// user's cursors of conv under a stripe of readMu, and waits for the sync
// after releasing it. A call that moves neither cursor still writes (the
// read cursor, unchanged) and waits for the sync, so that what it returns
// is durable even when a concurrent call, not synced yet, wrote it.
func (s *Store) SetRead(ctx context.Context, app, user, conv string, seq uint64, share bool) (read, shared uint64, err error) {
	if err := s.enter(); err != nil {
		return 0, 0, err
	}
	defer s.exit()
	if err := checkIDs(app, user, conv); err != nil {
		return 0, 0, err
	}
	rk, sk := readKey(app, user, conv), sharedReadKey(app, conv, user)
	mu := &s.readMu[maphash.Bytes(s.ackSeed, rk)%uint64(len(s.readMu))]
	mu.Lock()
	read, err = s.getU64(rk)
	if err == nil {
		shared, err = s.getU64(sk)
	}
	if err != nil {
		mu.Unlock()
		return 0, 0, fmt.Errorf("pebblestore: set read: %w", err)
	}
	read = max(read, seq)
	b := s.db.NewBatch()
	b.Set(rk, encodeU64(read), nil)
	if share && seq > shared {
		shared = seq
		b.Set(sk, encodeU64(shared), nil)
	}
	err = s.apply(b, true)
	mu.Unlock()
	if err == nil {
		err = s.wait(b, true)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("pebblestore: set read: %w", err)
	}
	own, err := s.ownRead(app, user, conv)
	if err != nil {
		return 0, 0, fmt.Errorf("pebblestore: set read: %w", err)
	}
	return max(read, own), shared, nil
}

// ownRead returns the seq of user's latest own message in conv (its "ro"
// key), capped at the conversation's last synced seq: an Append makes it
// readable before its sync, and a reader must not count a message the
// conversation does not show yet.
func (s *Store) ownRead(app, user, conv string) (uint64, error) {
	own, err := s.getU64(ownReadKey(app, user, conv))
	if err != nil || own == 0 {
		return 0, err
	}
	last, err := s.lastSeq(app, conv)
	return min(own, last), err
}

// Receipts implements store.Store, with one iterator: for each user, the
// seeks of deliveredOf and one to the shared read cursor.
func (s *Store) Receipts(ctx context.Context, app, conv string, users []string) (out []store.Receipt, err error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.exit()
	if err := checkIDs(app, conv); err != nil {
		return nil, err
	}
	if err := checkIDs(users...); err != nil {
		return nil, err
	}
	if len(users) == 0 {
		return nil, nil
	}
	it, err := s.tenantIter(app)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	out = make([]store.Receipt, len(users))
	for i, u := range users {
		delivered, _, err := deliveredOf(it, app, u, conv, math.MaxUint64)
		if err != nil {
			return nil, fmt.Errorf("pebblestore: receipts: %w", err)
		}
		read, err := seekU64(it, sharedReadKey(app, conv, u))
		if err != nil {
			return nil, fmt.Errorf("pebblestore: receipts: %w", err)
		}
		out[i] = store.Receipt{User: u, Delivered: delivered, Read: read}
	}
	return out, nil
}

// Prefs implements store.Store.
func (s *Store) Prefs(ctx context.Context, app, user string) (store.Prefs, error) {
	if err := s.enter(); err != nil {
		return store.Prefs{}, err
	}
	defer s.exit()
	if err := checkIDs(app, user); err != nil {
		return store.Prefs{}, err
	}
	v, err := s.get(prefsKey(app, user))
	if errors.Is(err, store.ErrNotFound) {
		return store.Prefs{}, nil
	}
	if err != nil {
		return store.Prefs{}, fmt.Errorf("pebblestore: prefs: %w", err)
	}
	return decodePrefs(v)
}

// SetPrefs implements store.Store, in one synced write.
func (s *Store) SetPrefs(ctx context.Context, app, user string, p store.Prefs) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.exit()
	if err := checkIDs(app, user); err != nil {
		return err
	}
	b := s.db.NewBatch()
	b.Set(prefsKey(app, user), encodePrefs(p), nil)
	if err := s.write(b, true); err != nil {
		return fmt.Errorf("pebblestore: set prefs: %w", err)
	}
	return nil
}

// ContactOf implements store.Store, with a seek per owner to its contact
// entry for contact, through one iterator.
func (s *Store) ContactOf(ctx context.Context, app, contact string, owners []string) (out []string, err error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.exit()
	if err := checkIDs(app, contact); err != nil {
		return nil, err
	}
	if err := checkIDs(owners...); err != nil {
		return nil, err
	}
	if len(owners) == 0 {
		return nil, nil
	}
	it, err := s.tenantIter(app)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	for _, o := range owners {
		k := contactKey(app, o, contact)
		if it.SeekGE(k) && bytes.Equal(it.Key(), k) {
			out = append(out, o)
		}
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("pebblestore: contact of: %w", err)
	}
	return out, nil
}

// tenantIter returns an iterator over app's keys, for seeks.
func (s *Store) tenantIter(app string) (*pebble.Iterator, error) {
	p := tenant(app)
	return s.db.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
}

// seekU64 returns the integer value of key, 0 if there is none, seeking it
// with it.
func seekU64(it *pebble.Iterator, key []byte) (uint64, error) {
	if !it.SeekGE(key) || !bytes.Equal(it.Key(), key) {
		return 0, it.Error()
	}
	v, err := it.ValueAndErr()
	if err != nil {
		return 0, err
	}
	return decodeU64(v)
}

// deliveredOf returns the furthest cursor of conv among the devices of
// user (SetAcked), and whether any device has one, with it, an iterator
// over app's keys. It seeks to the user's first cursor key, reads the
// device's cursor of conv, and seeks past the device's other cursors to
// the next device: a seek and a read per device, however many
// conversations each device acknowledged. It stops at the first cursor at
// enough or beyond.
func deliveredOf(it *pebble.Iterator, app, user, conv string, enough uint64) (delivered uint64, found bool, err error) {
	prefix := tenant(app).add("k", user).sep()
	for valid := it.SeekGE(prefix); valid && bytes.HasPrefix(it.Key(), prefix); {
		device, _, ok := bytes.Cut(it.Key()[len(prefix):], []byte{sep})
		if !ok {
			return 0, false, fmt.Errorf("corrupt cursor key %q", it.Key())
		}
		dp := append(slices.Clip(prefix), device...).sep()
		ck := dp.add(conv)
		if it.SeekGE(ck) && bytes.Equal(it.Key(), ck) {
			v, err := it.ValueAndErr()
			if err != nil {
				return 0, false, err
			}
			acked, err := decodeU64(v)
			if err != nil {
				return 0, false, err
			}
			delivered, found = max(delivered, acked), true
			if delivered >= enough {
				return delivered, true, nil
			}
		}
		valid = it.SeekGE(prefixEnd(dp))
	}
	return delivered, found, it.Error()
}

// directPeer returns the other user of the 1:1 conversation conv (a
// DirectConv key) as user sees it, and false when conv is not a 1:1
// conversation of user with someone else (a group, a conversation with
// oneself).
func directPeer(conv, user string) (string, bool) {
	rest, ok := strings.CutPrefix(conv, "u:")
	if !ok {
		return "", false
	}
	a, b, ok := strings.Cut(rest, ":")
	if !ok || strings.IndexByte(b, ':') >= 0 || a == b {
		return "", false
	}
	switch user {
	case a:
		return b, b != ""
	case b:
		return a, a != ""
	}
	return "", false
}

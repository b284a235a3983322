package pebblestore

import (
	"context"
	"hash/maphash"
)

// NextEpoch implements store.Store. The read-increment-write shares the
// striped locks of SetAcked; the write is synced.
func (s *Store) NextEpoch(ctx context.Context, app, user, device string) (uint64, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.exit()
	if err := checkIDs(app, user, device); err != nil {
		return 0, err
	}
	k := epochKey(app, user, device)
	mu := &s.ackMu[maphash.Bytes(s.ackSeed, k)%uint64(len(s.ackMu))]
	mu.Lock()
	defer mu.Unlock()
	cur, err := s.getU64(k)
	if err != nil {
		return 0, err
	}
	b := s.db.NewBatch()
	b.Set(k, encodeU64(cur+1), nil)
	if err := s.write(b, true); err != nil {
		return 0, err
	}
	return cur + 1, nil
}

// Epoch implements store.Store.
func (s *Store) Epoch(ctx context.Context, app, user, device string) (uint64, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.exit()
	if err := checkIDs(app, user, device); err != nil {
		return 0, err
	}
	return s.getU64(epochKey(app, user, device))
}

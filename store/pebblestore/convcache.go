package pebblestore

import "sync/atomic"

// defaultMaxCachedConvs is Options.MaxCachedConvs when it is zero.
const defaultMaxCachedConvs = 100_000

// convSeq is the sequence state of one conversation, cached so that Append
// does not read it and readers know how far the conversation is synced.
//
// The Store holds at most one convSeq per conversation: Append creates it
// on a miss, holding appendMu and seqMu, and the evictor removes it only
// when no Append holds it and every seq it allocated is published (see
// evictConv). A conversation without an entry therefore has no unsynced
// message, and its last seq is the value of its "c" key.
type convSeq struct {
	// key is app 0x00 conv, the entry's key in Store.convs. Static.
	key string
	// last is the last seq allocated. It is guarded by Store.appendMu.
	last uint64
	// durable is the last seq whose batch is synced. Readers see messages up
	// to durable only. It only grows.
	durable atomic.Uint64
	// pins counts the Appends holding the entry, from appendConv until they
	// have published their seqs or failed. It is incremented only while
	// seqMu is held, so an entry that the evictor, holding seqMu for
	// writing, finds unpinned gains no holder while it is removed.
	pins atomic.Int32
	// used is the clock's reference bit: lookups set it, and the evictor
	// clears it as its hand passes, sparing the entry once.
	used atomic.Bool
}

// publish raises c.durable to seq.
func (c *convSeq) publish(seq uint64) {
	for {
		cur := c.durable.Load()
		if seq <= cur || c.durable.CompareAndSwap(cur, seq) {
			return
		}
	}
}

// touch sets the reference bit, writing the shared word only if needed.
func (c *convSeq) touch() {
	if !c.used.Load() {
		c.used.Store(true)
	}
}

// unpin releases an entry that appendConv returned.
func (c *convSeq) unpin() { c.pins.Add(-1) }

// appendConv returns the cached state of conversation conv of app, pinned
// (the caller calls unpin once it has published its seqs or failed),
// loading it from the database on a miss. The caller holds appendMu. The
// entry is created before the Append writes anything to the conversation,
// so a reader that finds no entry knows the database holds no unsynced
// message of it.
func (s *Store) appendConv(app, conv string) (*convSeq, error) {
	k := app + "\x00" + conv
	s.seqMu.RLock()
	c := s.convs[k]
	if c != nil {
		c.pins.Add(1)
		c.touch()
	}
	s.seqMu.RUnlock()
	if c != nil {
		return c, nil
	}
	// Only appendConv adds entries, and the caller holds appendMu, so the
	// entry is still missing.
	s.seqMu.Lock()
	defer s.seqMu.Unlock()
	last, err := s.getU64(convKey(app, conv))
	if err != nil {
		return nil, err
	}
	c = &convSeq{key: k, last: last}
	c.durable.Store(last)
	c.pins.Store(1)
	for len(s.convs) >= s.maxConvs && s.evictConv() {
	}
	s.convRing = append(s.convRing, c)
	s.convs[k] = c
	return c, nil
}

// evictConv removes one entry from the cache, choosing it with a clock:
// the hand sweeps convRing, sparing once each entry used since it last
// passed, and never removing an entry that is pinned or has seqs allocated
// but not published. It reports false if it found none in two turns; the
// cache then grows past Options.MaxCachedConvs, by at most the number of
// conversations with an Append in flight, and shrinks back on later
// misses. The caller holds appendMu (for convSeq.last) and seqMu for
// writing.
func (s *Store) evictConv() bool {
	for range 2 * len(s.convRing) {
		if s.convHand >= len(s.convRing) {
			s.convHand = 0
		}
		c := s.convRing[s.convHand]
		if c.used.Load() {
			c.used.Store(false)
			s.convHand++
			continue
		}
		if c.pins.Load() > 0 || c.last != c.durable.Load() {
			s.convHand++
			continue
		}
		// Move the last entry into the slot; the hand looks at it next.
		n := len(s.convRing) - 1
		s.convRing[s.convHand] = s.convRing[n]
		s.convRing[n] = nil
		s.convRing = s.convRing[:n]
		delete(s.convs, c.key)
		return true
	}
	return false
}

// lastSeq returns the last synced seq of a conversation.
func (s *Store) lastSeq(app, conv string) (uint64, error) {
	s.seqMu.RLock()
	defer s.seqMu.RUnlock()
	if c := s.convs[app+"\x00"+conv]; c != nil {
		c.touch()
		return c.durable.Load(), nil
	}
	// No Append has written to the conversation since Open or since its
	// entry was evicted with every seq published, and none can start to
	// while seqMu is held, so the database's value is synced (Pebble syncs
	// what it recovers on Open). Readers do not cache it, so that queries
	// for unknown conversations do not grow the cache.
	return s.getU64(convKey(app, conv))
}

package core

import (
	"slices"
	"sync"
	"sync/atomic"

	lru "github.com/hashicorp/golang-lru/v2"

	qimpb "github.com/qim-im/qim/proto"
)

// recentCache holds the most recent stored messages of the busiest groups,
// in front of the store, for catch-up pushes and history pages.
//
// Consistency: an entry only ever holds a contiguous run of sequence
// numbers of messages the store holds. Messages are added right after the
// store commit returns (by the committer), or when another node's event
// brings them (in a cluster); add appends a message that extends the run,
// ignores one it holds already or older, and starts the run again at a
// message that leaves a hole. Readers never fill it from the store, so it
// never holds anything the store does not, and it never needs
// invalidation.
//
// On one node (tail), every commit passes through the committer, so the run
// ends at the group's latest stored message and the cache may also answer
// "nothing newer". In a cluster, other nodes append too, and their events
// may be late or lost: the cache then answers only from what it holds and
// sends any question about the tail to the store.
//
// Memory: the cache is bounded in bytes (MsgCost of each message), in total
// and per group (an eighth of the total), as well as in groups and in
// messages per group. Going over the total evicts the least recently used
// groups.
type recentCache struct {
	// Static after construction.
	tail       bool // the cache sees every commit: it may answer for the tail
	depth      int
	maxBytes   int64 // in total
	groupBytes int64 // per group
	lru        *lru.Cache[convKey, *recentMsgs]

	bytes atomic.Int64 // held by all entries in the cache

	addMu sync.Mutex // serialises add (the committer and the router's events)
}

type convKey struct{ app, conv string }

// recentMsgs is the cached suffix of one group's messages.
type recentMsgs struct {
	mu    sync.Mutex
	msgs  []*qimpb.Message // ascending, contiguous seqs; guarded by mu
	bytes int64            // MsgCost of msgs; guarded by mu
}

func newRecentCache(groups, depth int, maxBytes int64, tail bool) (*recentCache, error) {
	c := &recentCache{tail: tail, depth: depth, maxBytes: maxBytes, groupBytes: max(maxBytes/8, 1)}
	var err error
	c.lru, err = lru.NewWithEvict(groups, func(_ convKey, e *recentMsgs) {
		e.mu.Lock()
		c.bytes.Add(-e.bytes)
		e.bytes = 0
		e.msgs = nil
		e.mu.Unlock()
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Bytes returns what the cache holds, in bytes.
func (c *recentCache) Bytes() int64 { return c.bytes.Load() }

// add appends a stored message, whose MsgCost is cost: one just committed,
// or one another node committed.
func (c *recentCache) add(app, conv string, m *qimpb.Message, cost int64) {
	c.addMu.Lock()
	defer c.addMu.Unlock()
	k := convKey{app, conv}
	e, ok := c.lru.Get(k)
	if !ok {
		e = &recentMsgs{}
		c.lru.Add(k, e)
	}
	e.mu.Lock()
	if n := len(e.msgs); n > 0 && e.msgs[n-1].Seq+1 != m.Seq {
		if m.Seq <= e.msgs[n-1].Seq {
			// Held already, or older than the run: another node's
			// event, late or once per user of this node.
			e.mu.Unlock()
			return
		}
		// A hole (another node's messages not seen yet, or lost): never
		// serve a run with a hole in it; start again here.
		c.bytes.Add(-e.bytes)
		clear(e.msgs)
		e.msgs, e.bytes = e.msgs[:0], 0
	}
	// Drop the oldest messages to make room (a message that does not fit
	// at all leaves an empty entry: an empty entry answers nothing).
	drop := 0
	freed := int64(0)
	for drop < len(e.msgs) && (len(e.msgs)-drop >= c.depth || e.bytes-freed+cost > c.groupBytes) {
		freed += MsgCost(e.msgs[drop])
		drop++
	}
	if drop > 0 {
		n := copy(e.msgs, e.msgs[drop:])
		clear(e.msgs[n:])
		e.msgs = e.msgs[:n]
		e.bytes -= freed
		c.bytes.Add(-freed)
	}
	if cost <= c.groupBytes {
		e.msgs = append(e.msgs, m)
		e.bytes += cost
		c.bytes.Add(cost)
	}
	e.mu.Unlock()
	for c.bytes.Load() > c.maxBytes && c.lru.Len() > 1 {
		c.lru.RemoveOldest()
	}
}

// held returns the entry of conv, locked, if it holds messages; the caller
// unlocks it.
func (c *recentCache) held(app, conv string) (*recentMsgs, bool) {
	e, ok := c.lru.Get(convKey{app, conv})
	if !ok {
		return nil, false
	}
	e.mu.Lock()
	if len(e.msgs) == 0 {
		e.mu.Unlock()
		return nil, false
	}
	return e, true
}

// after returns up to limit messages with seq > after, if the cache can
// answer exactly (it holds seq after+1, or it knows nothing newer exists).
func (c *recentCache) after(app, conv string, after uint64, limit int) ([]*qimpb.Message, bool) {
	e, ok := c.held(app, conv)
	if !ok {
		return nil, false
	}
	defer e.mu.Unlock()
	lo, hi := e.msgs[0].Seq, e.msgs[len(e.msgs)-1].Seq
	if after >= hi {
		// Nothing newer, if this cache sees every commit.
		return nil, c.tail
	}
	if after+1 < lo {
		return nil, false
	}
	i := int(after + 1 - lo)
	j := min(i+limit, len(e.msgs))
	return slices.Clone(e.msgs[i:j]), true
}

// history returns the latest limit messages with seq < before (0: no bound),
// ascending, if the cache holds all of them.
func (c *recentCache) history(app, conv string, before uint64, limit int) ([]*qimpb.Message, bool) {
	e, ok := c.held(app, conv)
	if !ok {
		return nil, false
	}
	defer e.mu.Unlock()
	lo, hi := e.msgs[0].Seq, e.msgs[len(e.msgs)-1].Seq
	end := hi // last seq wanted
	if !c.tail && (before == 0 || before > hi+1) {
		// Messages newer than hi may exist.
		return nil, false
	}
	if before != 0 && before <= hi {
		if before <= lo {
			return nil, before <= 1
		}
		end = before - 1
	}
	start := uint64(1)
	if end >= uint64(limit) {
		start = end - uint64(limit) + 1
	}
	if start < lo {
		return nil, false
	}
	return slices.Clone(e.msgs[start-lo : end-lo+1]), true
}

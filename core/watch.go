package core

import (
	"context"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	qimpb "github.com/qim-im/qim/proto"
)

// watchPeriod is the most often a watch is told of new counts.
const watchPeriod = time.Second

// watches holds the receipt watches of this node's sessions (GROUP_RECEIPTS
// with watch: docs/PROTOCOL.md section 11.3). A change of a group's
// receipts, on any node, is broadcast (Event.Note with a group Receipt);
// the hub marks the group dirty here, and run recounts the watched
// messages of dirty groups at most once per watchPeriod and hands the
// counts that changed to their watches.
type watches struct {
	h    *Hub
	wake chan struct{} // capacity 1

	mu      sync.Mutex
	byGroup map[convKey]map[*Watch]struct{} // guarded by mu
	dirty   map[convKey]struct{}            // groups with watches whose receipts changed; guarded by mu
	out     map[convKey]struct{}            // groups changed here, to broadcast (a cluster); guarded by mu
}

// Watch is one session's watch of one group message's receipts.
type Watch struct {
	w    *watches
	key  convKey
	seq  uint64
	sink func(*qimpb.ReceiptCount)
	last *qimpb.ReceiptCount // what sink was last given; guarded by w.mu
	gone bool                // Stop was called; guarded by w.mu
}

func newWatches(h *Hub) *watches {
	return &watches{
		h:       h,
		wake:    make(chan struct{}, 1),
		byGroup: make(map[convKey]map[*Watch]struct{}),
		dirty:   make(map[convKey]struct{}),
		out:     make(map[convKey]struct{}),
	}
}

// WatchReceipts has sink called with the receipt counts of message seq of
// group whenever they change, at most once per second, until Stop; first
// is the count the caller already has (nil: none). sink is called from
// the hub's watch goroutine and must not block. The group is recounted
// once after the watch starts, so that a change between the caller's
// count and the watch's start is not missed.
func (h *Hub) WatchReceipts(app, group string, seq uint64, first *qimpb.ReceiptCount, sink func(*qimpb.ReceiptCount)) *Watch {
	w := &Watch{w: h.watches, key: convKey{app, group}, seq: seq, sink: sink, last: first}
	h.watches.mu.Lock()
	m := h.watches.byGroup[w.key]
	if m == nil {
		m = make(map[*Watch]struct{})
		h.watches.byGroup[w.key] = m
	}
	m[w] = struct{}{}
	h.watches.mu.Unlock()
	h.watches.touch(app, group)
	return w
}

// Stop ends the watch. It may be called more than once.
func (w *Watch) Stop() {
	w.w.mu.Lock()
	defer w.w.mu.Unlock()
	if w.gone {
		return
	}
	w.gone = true
	m := w.w.byGroup[w.key]
	delete(m, w)
	if len(m) == 0 {
		delete(w.w.byGroup, w.key)
		delete(w.w.dirty, w.key)
	}
}

// broadcastEvery is how often, in a cluster, a hub tells the other nodes
// which groups' receipts changed: one broadcast per group per period, not
// one per acknowledgement of each member.
const broadcastEvery = 250 * time.Millisecond

// changed reports that a cursor of group moved (a member's delivered or
// shared read cursor): every hub watching the group recounts. On one node
// it marks the group at once; in a cluster it collects the groups and run
// broadcasts them every broadcastEvery. It never blocks.
func (ws *watches) changed(app, group string) {
	if !ws.h.shared {
		ws.touch(app, group)
		return
	}
	ws.mu.Lock()
	ws.out[convKey{app, group}] = struct{}{}
	ws.mu.Unlock()
}

// broadcast tells every node's hub of the groups collected by changed.
func (ws *watches) broadcast() {
	ws.mu.Lock()
	out := ws.out
	if len(out) == 0 {
		ws.mu.Unlock()
		return
	}
	ws.out = make(map[convKey]struct{})
	ws.mu.Unlock()
	for k := range out {
		ws.h.router.Broadcast(k.app, Event{Note: &qimpb.Event{Receipt: &qimpb.Receipt{ToGroup: k.conv}}})
	}
}

// touch marks group's receipts changed, if a session here watches it. It
// never blocks.
func (ws *watches) touch(app, group string) {
	k := convKey{app, group}
	ws.mu.Lock()
	_, watched := ws.byGroup[k]
	if watched {
		ws.dirty[k] = struct{}{}
	}
	ws.mu.Unlock()
	if watched {
		select {
		case ws.wake <- struct{}{}:
		default:
		}
	}
}

// run recounts dirty groups, at most once per watchPeriod, and in a
// cluster broadcasts the groups changed here, until the hub closes. It
// runs in its own goroutine.
func (ws *watches) run() {
	var tick <-chan time.Time
	if ws.h.shared {
		t := time.NewTicker(broadcastEvery)
		defer t.Stop()
		tick = t.C
	}
	var next time.Time // the earliest the next pass may start
	var wait <-chan time.Time
	for {
		select {
		case <-ws.h.stop:
			return
		case <-tick:
			ws.broadcast()
			continue
		case <-ws.wake:
			if d := time.Until(next); d > 0 {
				if wait == nil {
					wait = time.After(d)
				}
				continue
			}
		case <-wait:
		}
		wait = nil
		ws.pass(ws.h.ctx)
		next = time.Now().Add(watchPeriod)
	}
}

// pass recounts the watched messages of the dirty groups, once per
// distinct message, and tells the watches whose counts changed.
func (ws *watches) pass(ctx context.Context) {
	ws.mu.Lock()
	type job struct {
		key convKey
		seq uint64
	}
	var jobs []job
	seen := make(map[job]bool)
	for k := range ws.dirty {
		for w := range ws.byGroup[k] {
			if j := (job{k, w.seq}); !seen[j] {
				seen[j] = true
				jobs = append(jobs, j)
			}
		}
	}
	clear(ws.dirty)
	ws.mu.Unlock()
	for _, j := range jobs {
		c, err := ws.h.ReceiptCount(ctx, j.key.app, j.key.conv, j.seq)
		if err != nil {
			if ctx.Err() == nil {
				ws.h.logger.Debug("recount receipts", "group", j.key.conv, "seq", j.seq, "err", err)
			}
			continue
		}
		var tell []*Watch
		ws.mu.Lock()
		for w := range ws.byGroup[j.key] {
			if w.seq == j.seq && !proto.Equal(w.last, c) {
				w.last = c
				tell = append(tell, w)
			}
		}
		ws.mu.Unlock()
		for _, w := range tell {
			w.sink(c)
		}
	}
}

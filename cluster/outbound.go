package cluster

import (
	"sync"
)

// outItem is one Deliver or Broadcast waiting to be published: data on
// subject (the broadcast or the fan-out subject), or (subject empty) on
// the subject of each of users in app.
type outItem struct {
	subject string
	app     string
	users   []string
	data    []byte
	size    int // what it counts against the queue's bound
}

// itemOverhead is what an item counts against the queue's bound beside
// its payload and user ids: the item itself and a string header per user.
const (
	itemOverhead = 96
	userOverhead = 16
)

// events returns how many NATS messages it is.
func (it *outItem) events() int {
	if it.subject != "" {
		return 1
	}
	return len(it.users)
}

// outQueue is the outgoing queue of a router: Deliver and Broadcast push
// to it without blocking, its publisher goroutine takes what is queued.
// It is bounded in bytes (payloads, user ids and a fixed overhead per
// item), counting what the publisher has taken until it releases it.
type outQueue struct {
	max  int
	wake chan struct{} // capacity 1: the publisher has something to do

	mu      sync.Mutex
	items   []outItem // guarded by mu
	bytes   int       // guarded by mu: queued and taken but not released
	dropped uint64    // guarded by mu: events dropped since the last report
	closed  bool      // guarded by mu
}

func newOutQueue(max int) *outQueue {
	return &outQueue{max: max, wake: make(chan struct{}, 1)}
}

// pushResult is what push did with an item.
type pushResult int

const (
	pushed     pushResult = iota
	pushFull              // dropped, and counted: the queue was full
	pushClosed            // dropped: the router is closed
)

// push queues it unless that would exceed the bound, or the queue is
// closed. It never blocks. When the queue is full, it counts the item's
// events as dropped.
func (q *outQueue) push(it outItem) pushResult {
	q.mu.Lock()
	res := pushed
	switch {
	case q.closed:
		res = pushClosed
	case q.bytes+it.size > q.max:
		res = pushFull
		q.dropped += uint64(it.events())
	default:
		q.items = append(q.items, it)
		q.bytes += it.size
	}
	q.mu.Unlock()
	if res != pushClosed {
		q.signal()
	}
	return res
}

// signal wakes the publisher.
func (q *outQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// take returns what is queued, and empties the queue; spare, if it has
// room, becomes the new queue's storage. What it returns still counts
// against the bound until released.
func (q *outQueue) take(spare []outItem) []outItem {
	q.mu.Lock()
	defer q.mu.Unlock()
	items := q.items
	q.items = spare[:0]
	return items
}

// release stops counting bytes taken against the bound.
func (q *outQueue) release(bytes int) {
	q.mu.Lock()
	q.bytes -= bytes
	q.mu.Unlock()
}

// addDropped counts events the publisher dropped (NATS refused them).
func (q *outQueue) addDropped(n uint64) {
	q.mu.Lock()
	q.dropped += n
	q.mu.Unlock()
}

// takeDropped returns the events dropped since the last call, and
// restarts the count.
func (q *outQueue) takeDropped() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := q.dropped
	q.dropped = 0
	return n
}

// close makes every later push fail without counting a drop.
func (q *outQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
}

// maxSpare is the largest batch storage the publisher keeps for reuse.
const maxSpare = 1024

// publishLoop publishes what is queued, then reports dropped events and
// reconnections, each time it is woken, until Close; it then publishes
// what is still queued. It runs in its own goroutine.
func (r *NATSRouter) publishLoop() {
	var spare []outItem
	for {
		select {
		case <-r.done:
			r.publishQueued(spare)
			return
		case <-r.out.wake:
		}
		spare = r.publishQueued(spare)
		r.publishReport()
	}
}

// publishQueued publishes what is queued, then releases it, and returns
// storage for the next batch.
func (r *NATSRouter) publishQueued(spare []outItem) []outItem {
	items := r.out.take(spare)
	var (
		bytes, failed int
		firstErr      error
	)
	publish := func(subject string, data []byte) {
		if err := r.nc.Publish(subject, data); err != nil {
			failed++
			if firstErr == nil {
				firstErr = err
			}
			return
		}
		r.stats.published.Add(1)
	}
	for i := range items {
		it := &items[i]
		bytes += it.size
		if it.subject != "" {
			publish(it.subject, it.data)
		} else {
			for _, u := range it.users {
				publish(r.subj.userSubject(it.app, u), it.data)
			}
		}
		*it = outItem{}
	}
	r.out.release(bytes)
	if failed > 0 {
		r.stats.droppedOut.Add(uint64(failed))
		r.out.addDropped(uint64(failed))
		r.logger.Warn("cluster: publish", "dropped", failed, "err", firstErr)
	}
	if cap(items) > maxSpare {
		return nil
	}
	return items[:0]
}

// publishReport tells the other nodes, on the missed subject, that events
// this node sent may have been lost: it dropped some since its last
// report, or it reconnected to NATS. If NATS refuses the report, it is
// kept for the next wake-up (the next event queued, or the reconnection).
func (r *NATSRouter) publishReport() {
	dropped := r.out.takeDropped()
	reconnected := r.reportReconnect.Swap(false)
	if dropped == 0 && !reconnected {
		return
	}
	data, err := encodeMissed(r.node, dropped)
	if err == nil {
		err = r.nc.Publish(r.subj.missed, data)
	}
	if err != nil {
		r.out.addDropped(dropped)
		if reconnected {
			r.reportReconnect.Store(true)
		}
		r.logger.Warn("cluster: publish missed report", "err", err)
		return
	}
	r.stats.published.Add(1)
	r.stats.missedSent.Add(1)
	r.logger.Info("cluster: reported possibly lost events", "dropped", dropped, "reconnected", reconnected)
}

package session

import (
	"context"
	"errors"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/metrics"
	qimpb "github.com/qim-im/qim/proto"
)

// eventBudget bounds, in bytes of encoded events, what a session queues for
// its device (docs/PROTOCOL.md section 11.1). Queued events are charged to
// the hub's memory budget too (core.Hub.Memory), so that all devices
// together stay within it.
const eventBudget = 64 << 10

// datagramQueue is how many typing datagrams a session hands to its
// datagram sender at most; beyond it they are dropped (as the network
// would).
const datagramQueue = 8

// features is the set of Feature values a session granted its device.
type features uint32

func (f features) has(x qimpb.Feature) bool { return f&(1<<uint(x)) != 0 }

// grant returns the features of asked that the server grants: all it
// knows, and DATAGRAMS only when the connection negotiated datagrams.
func grant(asked []qimpb.Feature, datagrams bool) (features, []qimpb.Feature) {
	var f features
	var granted []qimpb.Feature
	for _, x := range asked {
		switch x {
		case qimpb.Feature_FEATURE_RECEIPTS, qimpb.Feature_FEATURE_TYPING, qimpb.Feature_FEATURE_PRESENCE, qimpb.Feature_FEATURE_INBOX:
		case qimpb.Feature_FEATURE_DATAGRAMS:
			if !datagrams {
				continue
			}
		default:
			continue
		}
		if !f.has(x) {
			f |= 1 << uint(x)
			granted = append(granted, x)
		}
	}
	return f, granted
}

// eventKey identifies what an event is about: a newer event with the same
// key replaces (or, for receipts, merges into) one not sent yet.
type eventKey struct {
	kind metrics.EventKind
	conv string // "u:"+to_user or "g:"+to_group; "" for presence
	user string // whose receipt, typing or presence
	seq  uint64 // ReceiptCount: the message
}

// queuedEvent is an event waiting for the session's event writer.
type queuedEvent struct {
	ev   *qimpb.Event
	size int
	at   time.Time // when it was queued (typing expires)
}

// eventQueue is a session's queue of soft events: coalescing by key,
// bounded by eventBudget, drained by one writer goroutine (writeEvents)
// that owns the control stream's event writes, and one datagram sender
// (sendDatagrams) that alone may block in the transport's SendDatagram.
// offer never blocks: the router hands events to sessions from the
// commit path.
type eventQueue struct {
	s     *Session
	wake  chan struct{} // capacity 1
	dgram chan []byte   // typing frames for sendDatagrams; nil without FEATURE_DATAGRAMS

	// Guarded by s.mu.
	items map[eventKey]*queuedEvent
	order []eventKey // keys of items, oldest first
	bytes int
	dead  bool // the control stream failed: nothing more is sent
}

func newEventQueue(s *Session, datagrams bool) *eventQueue {
	q := &eventQueue{s: s, wake: make(chan struct{}, 1), items: make(map[eventKey]*queuedEvent)}
	if datagrams {
		q.dgram = make(chan []byte, datagramQueue)
	}
	return q
}

// keyOf returns ev's key and kind.
func keyOf(ev *qimpb.Event) (eventKey, bool) {
	conv := func(toUser, toGroup string) string {
		if toGroup != "" {
			return "g:" + toGroup
		}
		return "u:" + toUser
	}
	switch {
	case ev.Receipt != nil:
		return eventKey{metrics.EventReceipt, conv(ev.Receipt.ToUser, ev.Receipt.ToGroup), ev.Receipt.User, 0}, true
	case ev.Typing != nil:
		return eventKey{metrics.EventTyping, conv(ev.Typing.ToUser, ev.Typing.ToGroup), ev.Typing.FromUser, 0}, true
	case ev.Presence != nil:
		return eventKey{metrics.EventPresence, "", ev.Presence.User, 0}, true
	case ev.ReceiptCount != nil:
		return eventKey{metrics.EventReceiptCount, "g:" + ev.ReceiptCount.GroupId, "", ev.ReceiptCount.Seq}, true
	}
	return eventKey{}, false
}

// offer queues ev for the device. It never blocks. ev is not modified
// (it may be shared with other sessions).
func (q *eventQueue) offer(ev *qimpb.Event) {
	k, ok := keyOf(ev)
	if !ok {
		return
	}
	m := q.s.dev.metrics
	size := proto.Size(ev)
	s := q.s
	s.mu.Lock()
	if q.dead || s.closed {
		s.mu.Unlock()
		return
	}
	total := s.hub.Memory()
	if old := q.items[k]; old != nil {
		if k.kind == metrics.EventReceipt {
			ev = mergeReceipts(old.ev, ev)
			size = proto.Size(ev)
		}
		if d := size - old.size; d > 0 && !total.Take(int64(d), false) {
			s.mu.Unlock()
			m.EventDropped(k.kind, metrics.EventQueueFull)
			return
		} else if d < 0 {
			total.Give(int64(-d))
		}
		q.bytes += size - old.size
		old.ev, old.size, old.at = ev, size, time.Now()
		s.mu.Unlock()
		q.kick()
		return
	}
	if q.bytes+size > eventBudget && k.kind != metrics.EventTyping {
		q.evictTypingLocked(size)
	}
	if q.bytes+size > eventBudget || !total.Take(int64(size), false) {
		s.mu.Unlock()
		m.EventDropped(k.kind, metrics.EventQueueFull)
		return
	}
	q.items[k] = &queuedEvent{ev: ev, size: size, at: time.Now()}
	q.order = append(q.order, k)
	q.bytes += size
	s.mu.Unlock()
	q.kick()
}

// evictTypingLocked drops queued typing events, oldest first, until size
// more bytes fit or none is left. s.mu must be held.
func (q *eventQueue) evictTypingLocked(size int) {
	for i := 0; i < len(q.order) && q.bytes+size > eventBudget; i++ {
		k := q.order[i]
		if it := q.items[k]; k.kind == metrics.EventTyping && it != nil {
			q.bytes -= it.size
			q.s.hub.Memory().Give(int64(it.size))
			delete(q.items, k)
			q.s.dev.metrics.EventDropped(k.kind, metrics.EventQueueFull)
		}
	}
}

// mergeReceipts returns a Receipt event with the furthest cursors of a
// and b, which have the same key.
func mergeReceipts(a, b *qimpb.Event) *qimpb.Event {
	r := &qimpb.Receipt{
		User:        b.Receipt.User,
		ToUser:      b.Receipt.ToUser,
		ToGroup:     b.Receipt.ToGroup,
		Delivered:   max(a.Receipt.Delivered, b.Receipt.Delivered),
		Read:        max(a.Receipt.Read, b.Receipt.Read),
		ReadPrivate: max(a.Receipt.ReadPrivate, b.Receipt.ReadPrivate),
	}
	return &qimpb.Event{Receipt: r}
}

func (q *eventQueue) kick() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// next takes the oldest queued event, or returns nil.
func (q *eventQueue) next() (eventKey, *queuedEvent) {
	s := q.s
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(q.order) > 0 {
		k := q.order[0]
		q.order = q.order[1:]
		if it := q.items[k]; it != nil {
			delete(q.items, k)
			q.bytes -= it.size
			s.hub.Memory().Give(int64(it.size))
			return k, it
		}
	}
	q.order = nil // let the array go
	return eventKey{}, nil
}

// writeEvents writes the queued events until ctx ends: it runs in its own
// goroutine, started once the device has its Connected, after first
// writing the snapshot (the contacts' presence) it is given.
func (q *eventQueue) writeEvents(ctx context.Context, snapshot []*qimpb.Event) {
	m := q.s.dev.metrics
	for _, ev := range snapshot {
		if !q.writeStream(ev, metrics.EventPresence) {
			return
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-q.wake:
		}
		for {
			k, it := q.next()
			if it == nil {
				break
			}
			if k.kind == metrics.EventTyping {
				if time.Since(it.at) > time.Duration(it.ev.Typing.TtlMs)*time.Millisecond {
					m.EventDropped(k.kind, metrics.EventExpired)
					continue
				}
				if q.dgram != nil {
					frame, err := qimpb.EncodeDatagram(qimpb.CommandType_EVENT, it.ev)
					if err != nil {
						continue
					}
					select {
					case q.dgram <- frame:
					default:
						m.EventDropped(k.kind, metrics.EventQueueFull)
					}
					continue
				}
			}
			if !q.writeStream(it.ev, k.kind) {
				return
			}
		}
	}
}

// release drops every queued event and gives back what they held of the
// hub's memory budget; with dead, the queue takes no more events.
func (q *eventQueue) release(dead bool) {
	q.s.mu.Lock()
	defer q.s.mu.Unlock()
	q.dead = q.dead || dead
	clear(q.items)
	q.s.hub.Memory().Give(int64(q.bytes))
	q.order, q.bytes = nil, 0
}

// writeStream writes ev on the control stream. After a failed write the
// queue is dead: the device does not read its control stream, or the
// connection is ending.
func (q *eventQueue) writeStream(ev *qimpb.Event, kind metrics.EventKind) bool {
	m := q.s.dev.metrics
	frame, err := qimpb.EncodeFrame(qimpb.CommandType_EVENT, ev)
	if err == nil {
		err = q.s.conn.WriteEvent(frame)
	}
	if err != nil {
		m.EventDropped(kind, metrics.EventWriteFailed)
		q.release(true)
		if !errors.Is(err, context.Canceled) {
			q.s.logger.Debug("events stop: control stream write failed", "err", err)
		}
		return false
	}
	m.EventSent(kind, false)
	return true
}

// sendDatagrams sends the typing frames writeEvents hands it, in QUIC
// datagrams, until ctx ends. It runs in its own goroutine: the transport's
// SendDatagram blocks while its queue is full, and nothing else waits for
// this goroutine. A frame the transport refuses (too large for a datagram
// on this path, say) is dropped, like a datagram lost on the way.
func (q *eventQueue) sendDatagrams(ctx context.Context) {
	m := q.s.dev.metrics
	for {
		select {
		case <-ctx.Done():
			return
		case frame := <-q.dgram:
			if err := q.s.conn.SendDatagram(frame); err != nil {
				m.EventDropped(metrics.EventTyping, metrics.EventWriteFailed)
				continue
			}
			m.EventSent(metrics.EventTyping, true)
		}
	}
}

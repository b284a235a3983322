package session

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/qim-im/qim/core"
	"github.com/qim-im/qim/metrics"
	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// maxLive bounds the live messages a pusher buffers; beyond it, or beyond
// the device's memory budget (budget.go), stored messages are read back from
// the store (or the recent cache) when their turn comes, and unstored ones
// are dropped (they were best-effort).
const maxLive = 256

// pusher delivers one conversation's messages to one device, in sequence
// order, at most window unacknowledged at a time. It runs in its own
// goroutine (run) and writes through the conversation's stream.
type pusher struct {
	// Static after construction.
	s        *Session
	conv     string
	wake     chan struct{} // capacity 1
	stopped  chan struct{} // closed by stop
	stopOnce sync.Once

	mu        sync.Mutex  // guards the fields below
	ready     bool        // acked and sent are initialised
	acked     uint64      // the device has every message up to here
	persisted uint64      // acked as last written to the store
	sent      uint64      // written to the stream up to here
	queued    uint64      // handed to the stream's writer up to here; >= sent
	last      uint64      // the latest seq known to exist
	skipped   []uint64    // own messages passed over in (acked, sent], ascending
	live      []pushItem  // known messages with seq > sent, ascending
	ephem     []pushItem  // unstored messages waiting to be written
	stream    *convStream // where pushes go; nil until bound or opened
	gen       uint64      // incremented when the stream is lost or released
	busy      bool        // run is in pushAll (streams.go)

	// retired is set when the pusher left its session's pushers: it takes
	// no more messages (offer and bind refuse), and a new pusher takes over
	// the conversation. Guarded by mu (set with the session's mu held too).
	retired bool

	// Owned by run: closed when the device has room in its budget again
	// after a push did not fit; nil otherwise.
	roomWait <-chan struct{}
}

// retireAfter is how long a pusher with nothing to do and no stream waits
// before it retires (retire), so that a device's thousands of quiet
// conversations cost no goroutine each.
const retireAfter = 2 * time.Second

// pushItem is a message to push, with when it was read off its sender's
// stream (zero when metrics are off or it was read back from the store)
// and, when it was routed live, its push frame shared by every device it
// goes to.
type pushItem struct {
	msg   *qimpb.Message
	read  time.Time
	frame *core.PushFrame
	cost  charge // what it holds of the device's budget while buffered
}

func newPusher(s *Session, conv string) *pusher {
	p := &pusher{
		s:       s,
		conv:    conv,
		wake:    make(chan struct{}, 1),
		stopped: make(chan struct{}),
	}
	p.wake <- struct{}{}
	return p
}

// stop ends the pusher (access to the conversation was revoked).
func (p *pusher) stop() { p.stopOnce.Do(func() { close(p.stopped) }) }

func (p *pusher) wakeup() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// offer hands the pusher a message routed to the device, read off its
// sender's stream at read, with its shared frame (nil: encode it here). It
// never blocks. It reports false if the pusher has retired: the caller
// offers the message to the conversation's new pusher.
func (p *pusher) offer(m *qimpb.Message, read time.Time, frame *core.PushFrame) bool {
	mem := p.s.mem
	var n int64
	if frame != nil {
		n = frame.Cost()
	} else {
		n = core.MsgCost(m)
	}
	p.mu.Lock()
	if p.retired {
		p.mu.Unlock()
		return false
	}
	if m.Seq == 0 {
		c, ok := charge{}, len(p.ephem) < maxLive
		if ok {
			c, ok = mem.take(n, frame, false)
		}
		if ok {
			p.ephem = append(p.ephem, pushItem{m, read, frame, c})
		} else {
			p.s.dev.metrics.Dropped(metrics.QueueEphemeral)
		}
	} else {
		p.last = max(p.last, m.Seq)
		if !p.ready || m.Seq > p.sent {
			i, found := slices.BinarySearchFunc(p.live, m.Seq, func(x pushItem, seq uint64) int {
				return cmpU64(x.msg.Seq, seq)
			})
			if !found {
				c, ok := charge{}, len(p.live) < maxLive
				if ok {
					c, ok = mem.take(n, frame, false)
				}
				if ok {
					p.live = slices.Insert(p.live, i, pushItem{m, read, frame, c})
				} else {
					// It is stored: it is read back when its turn comes.
					p.s.dev.metrics.Dropped(metrics.QueueLive)
				}
			}
		}
	}
	p.mu.Unlock()
	p.wakeup()
	return true
}

// release gives back the budget of items the pusher no longer holds.
func (p *pusher) release(items []pushItem) {
	for i := range items {
		p.s.mem.give(items[i].cost)
		items[i].cost = charge{}
	}
}

// bind makes cs the stream pushes go on, if there is none yet. It reports
// whether cs is now the push stream.
func (p *pusher) bind(cs *convStream) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.retired {
		return false
	}
	if p.stream == nil {
		p.stream = cs
	}
	return p.stream == cs
}

// isRetired reports whether the pusher has retired.
func (p *pusher) isRetired() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.retired
}

// streamLost is called when cs ends. What was written to it and not
// acknowledged is sent again on the next stream.
func (p *pusher) streamLost(cs *convStream) {
	p.mu.Lock()
	if p.stream == cs {
		p.stream = nil
		p.gen++
		if p.ready {
			p.sent, p.queued = p.acked, p.acked
			p.skipped = p.skipped[:0]
		}
	}
	p.mu.Unlock()
	p.wakeup()
}

// ack records the device's cumulative acknowledgement of seq and lets more
// messages go. The stream's reader persists it (persistAcked), once per
// burst of acknowledgements: one store write per delivery was the largest
// cost of a group fan-out.
//
// The device may acknowledge a message before run has recorded it as sent
// (run records a batch after handing all of it to the writer): anything
// queued counts.
func (p *pusher) ack(seq uint64) {
	p.mu.Lock()
	if !p.ready || seq <= p.acked || seq > p.queued {
		p.mu.Unlock()
		return
	}
	p.acked = seq
	p.advanceOverSkipped()
	p.mu.Unlock()
	p.wakeup()
}

// persistAcked writes the device's cursor if it moved since it was last
// written: the stream's reader calls it after acknowledgements, the
// pusher's goroutine after passing over the device's own messages. The
// store only moves a cursor forward, so the two may race. Cursors are written
// without sync anyway (a device that sees a message again drops it by
// seq), so writing them a moment later loses nothing that a power cut
// would not.
func (p *pusher) persistAcked(ctx context.Context) {
	p.mu.Lock()
	acked, dirty := p.acked, p.ready && p.acked > p.persisted
	p.mu.Unlock()
	if !dirty {
		return
	}
	p.persist(ctx, acked)
	p.mu.Lock()
	p.persisted = max(p.persisted, acked)
	p.mu.Unlock()
}

// advanceOverSkipped moves acked over own messages that directly follow it.
// p.mu must be held.
func (p *pusher) advanceOverSkipped() {
	i := 0
	for ; i < len(p.skipped); i++ {
		switch {
		case p.skipped[i] <= p.acked:
		case p.skipped[i] == p.acked+1:
			p.acked++
		default:
			p.skipped = p.skipped[i:]
			return
		}
	}
	p.skipped = p.skipped[:0]
}

func (p *pusher) persist(ctx context.Context, seq uint64) {
	s := p.s
	// An acknowledgement received is recorded even if the session is
	// ending meanwhile.
	if err := s.hub.Store().SetAcked(context.WithoutCancel(ctx), s.app, s.user, s.device, p.conv, seq); err != nil {
		// Not fatal: the device will see these messages again and drop them.
		s.logger.Warn("persist ack", "conv", p.conv, "seq", seq, "err", err)
		return
	}
	s.hub.Delivered(s.app, s.user, p.conv, seq)
}

// run pushes until the session ends or the pusher is stopped, and then
// persists the last acknowledgement and gives back what it held.
func (p *pusher) run() {
	ctx := p.s.ctx
	defer p.persistAcked(ctx)
	defer func() {
		p.retire(true)
		p.mu.Lock()
		live, ephem := p.live, p.ephem
		p.live, p.ephem = nil, nil
		p.mu.Unlock()
		p.release(live)
		p.release(ephem)
	}()
	backoff := 10 * time.Millisecond
	idle := time.NewTimer(retireAfter)
	defer idle.Stop()
	for {
		select {
		case <-p.wake:
		case <-p.roomWait:
		case <-idle.C:
			p.persistAcked(ctx)
			if p.retire(false) {
				return
			}
		case <-p.stopped:
			return
		case <-ctx.Done():
			return
		}
		p.roomWait = nil
		err := p.pushAllBusy(ctx)
		p.persistAcked(ctx)
		idle.Reset(retireAfter)
		switch {
		case err == nil:
			backoff = 10 * time.Millisecond
		case ctx.Err() != nil:
			return
		case errors.Is(err, errRevoked):
			return
		default:
			p.s.logger.Warn("push", "conv", p.conv, "err", err)
			select {
			case <-time.After(backoff):
			case <-p.stopped:
				return
			case <-ctx.Done():
				return
			}
			backoff = min(2*backoff, 5*time.Second)
			p.wakeup()
		}
	}
}

// retire takes the pusher out of its session's pushers, so that the next
// message of the conversation starts a new one, and records how far the
// device got in the session's inbox snapshot, where the new pusher starts
// from. Unless force, it does so only when the pusher has nothing left to
// do: everything it knows of acknowledged (and persisted), nothing
// buffered, no stream. It reports whether the pusher retired.
func (p *pusher) retire(force bool) bool {
	s := p.s
	s.mu.Lock()
	defer s.mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.retired {
		return true
	}
	if !force && (s.inbox == nil || !p.ready || p.stream != nil || p.busy || p.acked < p.last ||
		p.persisted < p.acked || len(p.live) > 0 || len(p.ephem) > 0 || len(p.skipped) > 0) {
		return false
	}
	p.retired = true
	if s.pushers[p.conv] == p {
		delete(s.pushers, p.conv)
		if p.ready && s.inbox != nil {
			s.mergeInboxLocked(store.ConvState{Conv: p.conv, LastSeq: p.last, Acked: p.acked})
		}
	}
	return true
}

var errRevoked = errors.New("session: conversation access revoked")

// init loads the device's cursor for the conversation.
func (p *pusher) init(ctx context.Context) error {
	st, ok, err := p.s.inboxState(ctx, p.conv)
	if err != nil {
		return err
	}
	if !ok && core.IsGroupConv(p.conv) {
		// Not a member (any more): nothing to push.
		return errRevoked
	}
	p.mu.Lock()
	p.acked, p.sent, p.queued, p.persisted = st.Acked, st.Acked, st.Acked, st.Acked
	p.last = max(p.last, st.LastSeq)
	p.ready = true
	p.mu.Unlock()
	return nil
}

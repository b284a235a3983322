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
	}
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

// pushAll writes everything it can: unstored messages, then stored ones up
// to the window and the device's budget. When the budget stops it, it sets
// roomWait and returns nil.
func (p *pusher) pushAll(ctx context.Context) error {
	p.mu.Lock()
	ready := p.ready
	p.mu.Unlock()
	if !ready {
		if err := p.init(ctx); err != nil {
			return err
		}
	}
	for {
		p.mu.Lock()
		ephem := p.ephem
		p.ephem = nil
		p.sent = max(p.sent, p.acked) // acknowledged early, then the write failed
		room := p.s.dev.window - int(p.sent-p.acked)
		next := p.sent + 1
		i := 0
		for i < len(p.live) && p.live[i].msg.Seq < next {
			i++
		}
		p.release(p.live[:i])
		p.live = p.live[i:]
		var batch []pushItem
		for room > len(batch) && len(p.live) > 0 && p.live[0].msg.Seq == next+uint64(len(batch)) {
			batch = append(batch, p.live[0])
			p.live = p.live[1:]
		}
		fromStore := len(batch) == 0 && room > 0 && next <= p.last
		cs, gen := p.stream, p.gen
		p.mu.Unlock()

		if fromStore {
			ms, err := p.s.hub.Messages(ctx, p.s.app, p.conv, next-1, room)
			if err != nil {
				p.release(ephem)
				return err
			}
			for _, m := range ms {
				if m.Seq != next+uint64(len(batch)) {
					break
				}
				batch = append(batch, pushItem{msg: m})
			}
		}
		if len(batch) == 0 && len(ephem) == 0 {
			return nil
		}
		if cs == nil {
			var err error
			if cs, err = p.openStream(ctx); err != nil {
				p.release(ephem)
				p.unwrite(batch)
				return err
			}
			p.mu.Lock()
			gen = p.gen
			p.mu.Unlock()
		}
		if len(batch) > 0 {
			p.mu.Lock()
			if p.gen == gen && p.stream == cs {
				p.queued = max(p.queued, batch[len(batch)-1].msg.Seq)
			}
			p.mu.Unlock()
		}
		n, err := p.write(ctx, cs, ephem, batch)
		if n < len(batch) {
			p.unwrite(batch[n:])
		}
		batch = batch[:n]
		if len(batch) > 0 {
			p.mu.Lock()
			if p.gen == gen && p.stream == cs {
				for _, it := range batch {
					if m := it.msg; p.isOwn(m) {
						if p.acked+1 == m.Seq {
							p.acked = m.Seq
						} else {
							p.skipped = append(p.skipped, m.Seq)
						}
					}
				}
				p.sent = batch[len(batch)-1].msg.Seq
				p.advanceOverSkipped()
			}
			p.mu.Unlock()
		}
		if err != nil || p.roomWait != nil {
			return err
		}
	}
}

// unwrite puts back messages of a batch that were not written, so that
// their turn comes again: those the pusher held in its live buffer go back
// there, with their charges.
func (p *pusher) unwrite(items []pushItem) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, it := range items {
		if it.cost.n == 0 {
			continue // read from the store: it is read again
		}
		i, found := slices.BinarySearchFunc(p.live, it.msg.Seq, func(x pushItem, seq uint64) int {
			return cmpU64(x.msg.Seq, seq)
		})
		if found || len(p.live) >= maxLive {
			p.s.mem.give(it.cost)
			continue
		}
		p.live = slices.Insert(p.live, i, it)
	}
}

// isOwn reports whether m was sent by this very device, which has it already.
func (p *pusher) isOwn(m *qimpb.Message) bool {
	return m.FromUser == p.s.user && m.FromDevice == p.s.device
}

// write hands the frames of messages to the stream's writer, each with its
// charge, which the writer gives back once it has written it. Stored
// messages read back from the store are charged here; when the device's
// budget has no room for one, write stops there, sets roomWait, and
// returns how many of batch it wrote. Unstored messages were charged when
// offered. On error, what was not handed over is given back.
func (p *pusher) write(ctx context.Context, cs *convStream, ephem, batch []pushItem) (n int, err error) {
	for i := range ephem {
		if err == nil {
			err = p.writeOne(ctx, cs, &ephem[i])
		}
		p.s.mem.give(ephem[i].cost) // a no-op once handed over
	}
	if err != nil {
		return 0, err
	}
	for ; n < len(batch); n++ {
		it := &batch[n]
		if p.isOwn(it.msg) {
			p.s.mem.give(it.cost)
			it.cost = charge{}
			continue
		}
		if it.cost.n == 0 {
			c, ok, wait := p.s.mem.takeOrWait(core.MsgCost(it.msg), nil, true)
			if !ok {
				p.roomWait = wait
				return n, nil
			}
			it.cost = c
		}
		if err := p.writeOne(ctx, cs, it); err != nil {
			return n, err
		}
	}
	return n, nil
}

// writeOne hands one message's frame, and its charge, to the stream's
// writer. On success it clears it.cost: the writer gives it back.
func (p *pusher) writeOne(ctx context.Context, cs *convStream, it *pushItem) error {
	if p.isOwn(it.msg) {
		return nil
	}
	var frame []byte
	var err error
	if it.frame != nil {
		frame, err = it.frame.Bytes()
	} else {
		frame, err = core.EncodePush(it.msg)
	}
	if err != nil {
		return err
	}
	if err := cs.send(ctx, outFrame{frame: frame, cost: it.cost}); err != nil {
		if errors.Is(err, errStreamDone) {
			p.streamLost(cs)
		}
		return err
	}
	it.cost = charge{}
	p.s.dev.metrics.MessageOut(it.read)
	return nil
}

// openStream opens a stream to the device for this conversation, unless
// one got bound meanwhile. Beyond the session's budget of streams it
// opened, it first finishes the least recently used idle one (streams.go).
func (p *pusher) openStream(ctx context.Context) (*convStream, error) {
	p.s.makeRoom()
	str, err := p.s.conn.OpenStream(ctx)
	if err != nil {
		return nil, err
	}
	cs := p.s.newConvStream(str, true)
	cs.conv = p.conv
	cs.pusher.Store(p)
	if !p.bind(cs) {
		// A stream the device opened got bound first: use that one.
		str.CancelRead(qimpb.Code_OK)
		str.Close()
		p.mu.Lock()
		cs = p.stream
		p.mu.Unlock()
		if cs == nil {
			return nil, errors.New("session: push stream lost")
		}
		return cs, nil
	}
	cs.start()
	return cs, nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

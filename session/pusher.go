package session

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/qim-im/qim/metrics"
	qimpb "github.com/qim-im/qim/proto"
)

// maxLive bounds the live messages a pusher buffers; beyond it, stored
// messages are read back from the store (or the recent cache) when their
// turn comes, and unstored ones are dropped (they were best-effort).
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
}

// pushItem is a message to push, with when it was read off its sender's
// stream (zero when metrics are off or it was read back from the store)
// and, when it was routed live, its push frame shared by every device it
// goes to.
type pushItem struct {
	msg   *qimpb.Message
	read  time.Time
	frame *pushFrame
}

// pushFrame is a message's push frame, encoded once, by the first pusher
// that writes it, for every device the message is routed to: a group
// message to 1,000 online members is marshalled once, not 1,000 times.
// The frame is the same for every device (its request id is the seq).
type pushFrame struct {
	msg  *qimpb.Message
	once sync.Once
	b    []byte
	err  error
}

func newPushFrame(m *qimpb.Message) *pushFrame { return &pushFrame{msg: m} }

func (f *pushFrame) bytes() ([]byte, error) {
	f.once.Do(func() { f.b, f.err = encodePush(f.msg) })
	return f.b, f.err
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
// never blocks.
func (p *pusher) offer(m *qimpb.Message, read time.Time, frame *pushFrame) {
	p.mu.Lock()
	if m.Seq == 0 {
		if len(p.ephem) < maxLive {
			p.ephem = append(p.ephem, pushItem{m, read, frame})
		} else {
			p.s.hub.metrics.Dropped(metrics.QueueEphemeral)
		}
	} else {
		p.last = max(p.last, m.Seq)
		if !p.ready || m.Seq > p.sent {
			i, found := slices.BinarySearchFunc(p.live, m.Seq, func(x pushItem, seq uint64) int {
				return cmpU64(x.msg.Seq, seq)
			})
			switch {
			case found:
			case len(p.live) < maxLive:
				p.live = slices.Insert(p.live, i, pushItem{m, read, frame})
			default:
				p.s.hub.metrics.Dropped(metrics.QueueLive)
			}
		}
	}
	p.mu.Unlock()
	p.wakeup()
}

// bind makes cs the stream pushes go on, if there is none yet. It reports
// whether cs is now the push stream.
func (p *pusher) bind(cs *convStream) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stream == nil {
		p.stream = cs
	}
	return p.stream == cs
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
	if err := s.hub.store.SetAcked(context.WithoutCancel(ctx), s.app, s.user, s.device, p.conv, seq); err != nil {
		// Not fatal: the device will see these messages again and drop them.
		s.logger.Warn("persist ack", "conv", p.conv, "seq", seq, "err", err)
	}
}

// run pushes until the session ends or the pusher is stopped, and then
// persists the last acknowledgement.
func (p *pusher) run() {
	ctx := p.s.ctx
	defer p.persistAcked(ctx)
	backoff := 10 * time.Millisecond
	for {
		select {
		case <-p.wake:
		case <-p.stopped:
			return
		case <-ctx.Done():
			return
		}
		err := p.pushAllBusy(ctx)
		p.persistAcked(ctx)
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

var errRevoked = errors.New("session: conversation access revoked")

// init loads the device's cursor for the conversation.
func (p *pusher) init(ctx context.Context) error {
	st, ok, err := p.s.inboxState(ctx, p.conv)
	if err != nil {
		return err
	}
	if !ok && isGroupConv(p.conv) {
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
// to the window.
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
		room := p.s.hub.window - int(p.sent-p.acked)
		next := p.sent + 1
		i := 0
		for i < len(p.live) && p.live[i].msg.Seq < next {
			i++
		}
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
			ms, err := p.s.hub.messages(ctx, p.s.app, p.conv, next-1, room)
			if err != nil {
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
		if err := p.write(ctx, cs, ephem, batch); err != nil {
			return err
		}
		if len(batch) == 0 {
			continue
		}
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
}

// isOwn reports whether m was sent by this very device, which has it already.
func (p *pusher) isOwn(m *qimpb.Message) bool {
	return m.FromUser == p.s.user && m.FromDevice == p.s.device
}

// write hands the frames of messages to the stream's writer.
func (p *pusher) write(ctx context.Context, cs *convStream, ephem, batch []pushItem) error {
	for _, list := range [][]pushItem{ephem, batch} {
		for _, it := range list {
			if p.isOwn(it.msg) {
				continue
			}
			var frame []byte
			var err error
			if it.frame != nil {
				frame, err = it.frame.bytes()
			} else {
				frame, err = encodePush(it.msg)
			}
			if err != nil {
				return err
			}
			if err := cs.send(ctx, outFrame{frame: frame}); err != nil {
				if errors.Is(err, errStreamDone) {
					p.streamLost(cs)
				}
				return err
			}
			p.s.hub.metrics.MessageOut(it.read)
		}
	}
	return nil
}

// openStream opens a stream to the device for this conversation, unless
// one got bound meanwhile. Beyond the session's budget of streams it
// opened, it first finishes the least recently used idle one (streams.go).
func (p *pusher) openStream(ctx context.Context) (*convStream, error) {
	p.s.makeRoom()
	str, err := p.s.conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	cs := p.s.newConvStream(str, true)
	cs.conv = p.conv
	cs.pusher.Store(p)
	if !p.bind(cs) {
		// A stream the device opened got bound first: use that one.
		str.CancelRead(0)
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

// encodePush returns the frame that pushes m to a device: a MESSAGE
// request whose id is m's seq.
func encodePush(m *qimpb.Message) ([]byte, error) {
	return qimpb.AppendRequestFrame(nil, qimpb.RequestType_MESSAGE, m.Seq, m)
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

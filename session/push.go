package session

import (
	"context"
	"errors"
	"slices"

	"github.com/qim-im/qim/core"
	qimpb "github.com/qim-im/qim/proto"
)

// The pusher's writing side: what run does when woken. pushAll takes the
// messages to push in order, write hands their frames to the stream's
// writer within the device's budget, openStream opens a stream when the
// pusher has none.

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

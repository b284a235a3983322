package session

import (
	"container/list"
	"context"
	"sync"
	"time"

	qimpb "github.com/qim-im/qim/proto"
)

// streamSet is a session's cache of conversation streams. A stream is a
// cache entry, not a registry: a device may hold thousands of conversations
// over weeks on one connection, and QUIC lets each side open only as many
// streams as the other allows (1,000 here and in the Go client). So the
// server finishes idle streams and opens new ones when it needs them:
//
//   - Beyond Config.PushStreams streams it opened, the least recently used
//     idle one is finished before another is opened (makeRoom), and idle
//     ones are finished as they become idle (trim).
//   - A stream idle for Config.StreamIdle (opened by the server) or
//     Config.PeerStreamIdle (opened by the device) is finished by the
//     session's sweeper (sweepStreams).
//
// Idle means: the reader is not running a request, nothing is queued for
// the writer, and the stream's pusher,
// if any, has nothing to push and nothing unacknowledged. Finishing a
// stream (end) stops its read side (STOP_SENDING, code CLOSED: a compliant
// QUIC stack resets its send side even if the application does not react)
// and finishes its send side after what is queued (FIN), so that the
// stream is released on both sides and the device gets new stream credit.
// Requests the reader reads after that are not run: the device sends
// them again on another stream (PROTOCOL.md 3.3).
type streamSet struct {
	mu       sync.Mutex // guards the fields below and the cache fields of every convStream
	opened   list.List  // of *convStream the server opened, most recently used first
	peer     list.List  // of *convStream the device opened, most recently used first
	sweeping bool       // sweepStreams runs
}

// addStream puts a started stream in the cache, as the most recently used,
// and starts the sweeper if it is not running.
func (s *Session) addStream(cs *convStream) {
	ss := &s.streams
	ss.mu.Lock()
	defer ss.mu.Unlock()
	cs.lastUse = time.Now()
	if cs.byServer {
		cs.elem = ss.opened.PushFront(cs)
	} else {
		cs.elem = ss.peer.PushFront(cs)
	}
	if !ss.sweeping {
		ss.sweeping = true
		s.wg.Go(s.sweepStreams)
	}
}

// touchStream records that cs was used now.
func (s *Session) touchStream(cs *convStream) {
	ss := &s.streams
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if cs.elem != nil {
		cs.lastUse = time.Now()
		ss.listOf(cs).MoveToFront(cs.elem)
	}
}

// dropStream takes cs out of the cache. The writer calls it when it stops.
func (s *Session) dropStream(cs *convStream) {
	ss := &s.streams
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.unlist(cs)
}

// beginRequest reports whether the reader may run a request it read on cs:
// not once the server finished the stream. If so, the reader calls
// endRequest when the request's response is queued.
func (cs *convStream) beginRequest() bool {
	ss := &cs.s.streams
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if cs.ending {
		return false
	}
	cs.handling = true
	cs.lastUse = time.Now()
	if cs.elem != nil {
		ss.listOf(cs).MoveToFront(cs.elem)
	}
	return true
}

// endRequest ends what beginRequest began.
func (cs *convStream) endRequest() {
	ss := &cs.s.streams
	ss.mu.Lock()
	defer ss.mu.Unlock()
	cs.handling = false
	cs.lastUse = time.Now()
}

// makeRoom finishes idle streams the server opened, the least recently
// used first, until one more fits in the budget, or none is idle (then the
// server opens beyond its budget, up to what the device allows). A pusher
// calls it before it opens a stream.
func (s *Session) makeRoom() { s.endIdle(nil, 1) }

// trim finishes idle streams the server opened while there are more than
// its budget: cs first (it may just have become idle), then the least
// recently used ones. A stream's reader calls it after an acknowledgement
// and a pusher after writing, so that pushers waiting for stream credit
// from the device (a catch-up of thousands of conversations) get it as soon
// as streams are idle.
func (s *Session) trim(cs *convStream) { s.endIdle(cs, 0) }

// trimScan bounds how many streams endIdle looks at from the least recently
// used end; those not idle move to the front, so that the next call looks
// at others.
const trimScan = 16

func (s *Session) endIdle(first *convStream, room int) {
	ss := &s.streams
	var ended []*convStream
	ss.mu.Lock()
	over := ss.opened.Len() - s.dev.pushStreams + room
	if over > 0 && first != nil && first.byServer && first.elem != nil && ss.tryEnd(first) {
		ended = append(ended, first)
		over--
	}
	now := time.Now()
	for n := min(ss.opened.Len(), trimScan); n > 0 && over > 0; n-- {
		e := ss.opened.Back()
		cs := e.Value.(*convStream)
		if ss.tryEnd(cs) {
			ended = append(ended, cs)
			over--
		} else {
			cs.lastUse = now // in use: it has something to push, or acknowledge
			ss.opened.MoveToFront(e)
		}
	}
	ss.mu.Unlock()
	for _, cs := range ended {
		cs.end()
	}
}

// sweepStreams finishes streams that stayed idle too long, until the
// session ends or the cache is empty. It runs in its own goroutine, started
// by addStream.
func (s *Session) sweepStreams() {
	every := max(min(s.dev.streamIdle, s.dev.peerIdle)/4, 10*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-s.ctx.Done():
			return
		}
		now := time.Now()
		var ended []*convStream
		ss := &s.streams
		ss.mu.Lock()
		for _, l := range []struct {
			list *list.List
			idle time.Duration
		}{{&ss.opened, s.dev.streamIdle}, {&ss.peer, s.dev.peerIdle}} {
			// From the least recently used on; a stream that is old but
			// not idle (a device that does not acknowledge) moves to the
			// front, so each is looked at once per sweep.
			for n := l.list.Len(); n > 0; n-- {
				e := l.list.Back()
				cs := e.Value.(*convStream)
				if now.Sub(cs.lastUse) < l.idle {
					break
				}
				if ss.tryEnd(cs) {
					ended = append(ended, cs)
				} else {
					cs.lastUse = now
					l.list.MoveToFront(e)
				}
			}
		}
		empty := ss.opened.Len() == 0 && ss.peer.Len() == 0
		if empty {
			ss.sweeping = false
		}
		ss.mu.Unlock()
		for _, cs := range ended {
			cs.end()
		}
		if empty {
			return
		}
	}
}

// tryEnd marks cs as ending and takes it out of the cache if it is idle,
// and reports whether it did; the caller then calls cs.end, outside the
// lock. ss.mu must be held.
func (ss *streamSet) tryEnd(cs *convStream) bool {
	if cs.ending || cs.handling || len(cs.out) > 0 {
		return false
	}
	if p := cs.pusher.Load(); p != nil && !p.releaseIfIdle(cs) {
		return false
	}
	cs.ending = true
	ss.unlist(cs)
	return true
}

// unlist takes cs out of its list. ss.mu must be held.
func (ss *streamSet) unlist(cs *convStream) {
	if cs.elem != nil {
		ss.listOf(cs).Remove(cs.elem)
		cs.elem = nil
	}
}

func (ss *streamSet) listOf(cs *convStream) *list.List {
	if cs.byServer {
		return &ss.opened
	}
	return &ss.peer
}

// end finishes an idle stream that tryEnd marked: the server reads no more
// from it (a request the device wrote meanwhile is not run) and finishes
// its send side after what is queued. The device, reading EOF, finishes its
// side too, and QUIC releases the stream.
func (cs *convStream) end() {
	cs.s.logger.Debug("finishing idle stream", "conv", cs.conv, "by_server", cs.byServer)
	cs.str.CancelRead(qimpb.Code_CLOSED)
	cs.send(cs.s.ctx, outFrame{}) // the queue was empty: this does not wait
}

// releaseIfIdle reports whether cs carries nothing of p's: p is stopped,
// pushes on another stream, or has nothing to push and nothing
// unacknowledged on cs. In the last case it lets cs go: its next push
// opens a new stream.
func (p *pusher) releaseIfIdle(cs *convStream) bool {
	select {
	case <-p.stopped:
		return true
	default:
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.stream != cs:
		return true
	case p.busy || !p.ready || p.acked < p.queued || p.sent < p.last || len(p.live) > 0 || len(p.ephem) > 0:
		return false
	}
	p.stream = nil
	p.gen++
	p.sent, p.queued = p.acked, p.acked
	p.wakeup() // so that it retires once idle
	return true
}

// pushAllBusy runs pushAll, marking the pusher busy meanwhile: a stream is
// not released while run may be writing to it.
func (p *pusher) pushAllBusy(ctx context.Context) error {
	p.mu.Lock()
	p.busy = true
	p.mu.Unlock()
	err := p.pushAll(ctx)
	p.mu.Lock()
	p.busy = false
	cs := p.stream
	p.mu.Unlock()
	if cs != nil {
		p.s.trim(cs)
	}
	return err
}

package session

import (
	"context"
	"sync"
	"time"

	"github.com/qim-im/qim/core"
)

// Catching up in a cluster. On one node, every message committed reaches
// the sessions of its users through the router, so a session reads its
// inbox once, at connect (Session.catchUp). When other nodes share the
// store (core.Hub.Shared), their messages arrive through a router that may
// lose events (core NATS is at-most-once). Then every session re-reads its
// inbox (recatch) and pushes what it finds newer than what it knew:
//
//   - settleAfter after it opened, in case a message was committed and
//     published elsewhere before its subscription reached every node;
//   - at once (paced by catchUpWorkers), when the router reports that
//     events may have been lost (core.Listener.Missed: a reconnection, an
//     overflow, another node's lost publications);
//   - every Config.CatchUpEvery, spread over the interval, for losses
//     nobody noticed.
//
// So a message a device's session missed reaches it within CatchUpEvery,
// and within about a second when the loss was noticed.

// settleAfter is how long after it opened a session of a cluster re-reads
// its inbox once.
const settleAfter = time.Second

// catchUpWorkers is how many sessions re-read their inbox at once in a
// catch-up pass.
const catchUpWorkers = 8

// devicesListener is the device layer as its router's listener: it hears
// that events may have been lost.
type devicesListener struct{ d *Devices }

// ReceiveNode implements core.Listener: the device layer has no use for
// node-wide events (the hub keeps the caches).
func (devicesListener) ReceiveNode(string, core.Event) {}

// Missed implements core.Listener. It never blocks: passes that are asked
// for while one is waiting to start are one pass.
func (l devicesListener) Missed() {
	select {
	case l.d.missed <- struct{}{}:
	default:
	}
}

// catchUpLoop runs the catch-up passes of a cluster's device layer until
// Close. It runs in its own goroutine.
func (d *Devices) catchUpLoop() {
	tick := time.NewTicker(d.catchUpEvery)
	defer tick.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-d.missed:
			d.recatchAll(0)
		case <-tick.C:
			d.recatchAll(d.catchUpEvery / 2)
		}
	}
}

// recatchAll has every live session re-read its inbox, spread over
// spread (0: at once), catchUpWorkers at a time. A report of lost events
// during a spread pass ends the spreading: the rest go at once.
func (d *Devices) recatchAll(spread time.Duration) {
	all := d.sessionsAll()
	if len(all) == 0 {
		return
	}
	d.passes.Add(1)
	var pace time.Duration
	if spread > 0 {
		pace = spread / time.Duration(len(all))
	}
	sem := make(chan struct{}, catchUpWorkers)
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, s := range all {
		if pace > 0 {
			t := time.NewTimer(pace)
			select {
			case <-t.C:
			case <-d.missed:
				pace = 0
			case <-d.stop:
				t.Stop()
				return
			}
			t.Stop()
		}
		select {
		case sem <- struct{}{}:
		case <-d.stop:
			return
		}
		wg.Go(func() {
			defer func() { <-sem }()
			s.recatch(s.ctx)
		})
	}
}

// recatch re-reads the device's inbox and has every conversation with
// messages newer than the device acknowledged pushed (the pusher reads what
// it lacks from the store). A failed read is only logged: the next pass
// tries again.
func (s *Session) recatch(ctx context.Context) {
	if s.sendOnly || ctx.Err() != nil {
		return
	}
	inbox, err := s.hub.Store().Inbox(ctx, s.app, s.user, s.device)
	if err != nil {
		if ctx.Err() == nil {
			s.logger.Warn("catch-up pass: read inbox", "err", err)
		}
		return
	}
	s.mu.Lock()
	for _, c := range inbox {
		s.mergeInboxLocked(c)
	}
	s.mu.Unlock()
	for _, c := range inbox {
		if c.LastSeq <= c.Acked {
			continue
		}
		// A pusher that has just retired refuses: the next one takes it.
		for {
			p := s.pusherFor(c.Conv)
			if p == nil || p.learn(c.LastSeq) {
				break
			}
		}
	}
}

// learn tells the pusher that the conversation has stored messages up to
// seq: it pushes those the device lacks. It never blocks. It reports false
// if the pusher has retired.
func (p *pusher) learn(seq uint64) bool {
	p.mu.Lock()
	if p.retired {
		p.mu.Unlock()
		return false
	}
	p.last = max(p.last, seq)
	p.mu.Unlock()
	p.wakeup()
	return true
}

// sessionsAll returns every live session.
func (d *Devices) sessionsAll() []*Session {
	d.live.mu.Lock()
	defer d.live.mu.Unlock()
	var out []*Session
	for _, m := range d.live.byApp {
		for s := range m {
			out = append(out, s)
		}
	}
	return out
}

// CatchUpPasses returns how many catch-up passes over every session the
// device layer has run (in a cluster), for tests and metrics.
func (d *Devices) CatchUpPasses() uint64 { return d.passes.Load() }

package session

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/qim-im/qim/core"
	"github.com/qim-im/qim/presence"
	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// Session is one authenticated device connection. The transport (quicsrv)
// creates it with Devices.Open when CONNECT succeeds, hands it every stream
// the device opens (HandleStream), and calls Close when the connection
// ends. It is a core.Receiver of its user's events.
type Session struct {
	// Static after Open.
	dev      *Devices
	hub      *core.Hub
	conn     Conn
	app      string
	user     string
	device   string
	sendOnly bool
	epoch    uint64 // the device's epoch at this CONNECT (store.Store.NextEpoch)
	logger   *slog.Logger
	ctx      context.Context // cancelled by Close
	cancel   context.CancelFunc
	mem      *deviceMem // what the server buffers for the device
	feats    features   // what the device asked for and was granted (events.go)
	granted  []qimpb.Feature
	events   *eventQueue // nil without event features
	presence presence.Conn

	unregister func()
	wg         sync.WaitGroup // every goroutine of the session

	streams streamSet // the conversation streams, a cache (streams.go); has its own lock

	mu      sync.Mutex
	pushers map[string]*pusher         // by conversation; guarded by mu
	inbox   map[string]store.ConvState // snapshot at connect, and later reads (inboxState); guarded by mu
	closed  bool                       // guarded by mu
	watches map[string]*core.Watch     // receipt watches, by group; guarded by mu
	readers int                        // stream readers running; guarded by mu
	drained chan struct{}              // closed when readers drops to 0; guarded by mu

	// Reads of the inbox for conversations the snapshot lacks
	// (inboxState). Guarded by mu.
	inboxReads uint64        // reads started
	inboxRead  uint64        // the number of the last read finished
	inboxDone  chan struct{} // closed when the read in progress finishes; nil if none
	inboxErr   error         // the last read's error
}

// handshakeDone waits until the connection's handshake has completed, so
// that nothing the device sent can be a replay.
func (s *Session) handshakeDone(ctx context.Context) error {
	select {
	case <-s.conn.HandshakeComplete():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// User returns the session's user.
func (s *Session) User() string { return s.user }

// Device returns the session's device id.
func (s *Session) Device() string { return s.device }

// Close ends the session: it stops its pushers and stream goroutines and
// waits for them. The caller closes the connection first, so that blocked
// stream reads return.
func (s *Session) Close() {
	s.mu.Lock()
	s.closed = true
	watches := s.watches
	s.watches = nil
	s.mu.Unlock()
	for _, w := range watches {
		w.Stop()
	}
	s.presence.Leave()
	s.dev.untrack(s)
	s.unregister()
	s.cancel()
	s.wg.Wait()
	if s.events != nil {
		s.events.release(true)
	}
}

// DrainReaders waits until every stream reader has returned (the device
// finished its streams) or timeout passes. quicsrv calls it on a
// DISCONNECT, so that acknowledgements the device wrote before it are
// recorded before the connection closes.
func (s *Session) DrainReaders(timeout time.Duration) {
	s.mu.Lock()
	if s.readers == 0 {
		s.mu.Unlock()
		return
	}
	if s.drained == nil {
		s.drained = make(chan struct{})
	}
	drained := s.drained
	s.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-drained:
	case <-t.C:
	}
}

// readerStarted and readerDone count the running stream readers.
func (s *Session) readerStarted() {
	s.mu.Lock()
	s.readers++
	s.mu.Unlock()
}

func (s *Session) readerDone() {
	s.mu.Lock()
	s.readers--
	if s.readers == 0 && s.drained != nil {
		close(s.drained)
		s.drained = nil
	}
	s.mu.Unlock()
}

// Receive implements core.Receiver. It never blocks.
func (s *Session) Receive(ev core.Event) {
	switch {
	case ev.EndSessions != "":
		s.conn.Disconnect(qimpb.Code_UNAUTHENTICATED, ev.EndSessions)
	case ev.ReplaceDevice != "":
		// Only an older session goes: a connection that was still
		// completing its handshake when a newer one of the same device
		// connected must not close the newer one.
		if ev.Replaces(s.device, s.epoch) {
			s.conn.Disconnect(qimpb.Code_REPLACED, "the same device connected again")
		}
	case ev.Revoke != "":
		s.mu.Lock()
		p := s.pushers[ev.Revoke]
		delete(s.pushers, ev.Revoke)
		delete(s.inbox, ev.Revoke)
		w := s.watches[strings.TrimPrefix(ev.Revoke, "g:")]
		delete(s.watches, strings.TrimPrefix(ev.Revoke, "g:"))
		s.mu.Unlock()
		if p != nil {
			p.stop()
		}
		if w != nil {
			w.Stop()
		}
	case ev.Note != nil:
		s.receiveNote(ev.Note, ev.NoteDevice)
	case ev.Msg != nil && !s.sendOnly:
		conv := ev.Conv
		if conv == "" {
			conv = core.ConvOf(ev.Msg)
		}
		// A pusher that has just retired refuses: the next one takes it.
		for {
			p := s.pusherFor(conv)
			if p == nil || p.offer(ev.Msg, ev.Read, ev.Frame) {
				break
			}
		}
	}
}

// checkEpoch closes the session with REPLACED if the store holds a newer
// epoch of its device: a newer connection announced itself before this
// session registered with the router (a session that stalled between
// taking its epoch and registering), so the announcement missed it. A
// failed read is only logged: the announcement is the rule, this check
// the backstop.
func (s *Session) checkEpoch() {
	cur, err := s.hub.Store().Epoch(s.ctx, s.app, s.user, s.device)
	switch {
	case err != nil:
		if s.ctx.Err() == nil {
			s.logger.Warn("check epoch", "err", err)
		}
	case cur > s.epoch:
		s.conn.Disconnect(qimpb.Code_REPLACED, "the same device connected again")
	}
}

// HandleStream serves a stream the device opened. It returns at once; the
// stream's goroutines belong to the session.
func (s *Session) HandleStream(str Stream) {
	cs := s.newConvStream(str, false)
	cs.start()
}

// catchUp reads the device's inbox and starts a pusher for every
// conversation with messages the device has not acknowledged.
func (s *Session) catchUp() {
	inbox, err := s.hub.Store().Inbox(s.ctx, s.app, s.user, s.device)
	if err != nil {
		if s.ctx.Err() == nil {
			s.logger.Error("catch-up: read inbox", "err", err)
			s.conn.Disconnect(qimpb.Code_STORE_UNAVAILABLE, "could not read the inbox; reconnect later")
		}
		return
	}
	s.catchUpFrom(inbox)
}

// catchUpFrom is catchUp with the inbox read already, after the session
// registered with the router.
func (s *Session) catchUpFrom(inbox []store.ConvState) {
	s.mu.Lock()
	for _, c := range inbox {
		s.mergeInboxLocked(c)
	}
	if s.inbox == nil {
		s.inbox = make(map[string]store.ConvState)
	}
	s.mu.Unlock()
	for _, c := range inbox {
		if c.LastSeq > c.Acked {
			if p := s.pusherFor(c.Conv); p != nil {
				p.wakeup()
			}
		}
	}
}

// pusherFor returns the conversation's pusher, starting it if needed. It
// returns nil once the session is closed.
func (s *Session) pusherFor(conv string) *pusher {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.sendOnly {
		return nil
	}
	p := s.pushers[conv]
	if p == nil {
		p = newPusher(s, conv)
		s.pushers[conv] = p
		s.wg.Go(p.run)
	}
	return p
}

// inboxState returns the device's state of conv from the connect-time
// snapshot, as new for a 1:1 conversation the snapshot lacks, or else from
// a read of the device's inbox that started after this call. Concurrent
// misses share one read, whose result is merged into the snapshot: a
// device that starts thousands of conversations on one connection must not
// read its whole inbox once for each of them.
func (s *Session) inboxState(ctx context.Context, conv string) (store.ConvState, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.inbox[conv]; ok {
		return c, true, nil
	}
	if s.inbox != nil && !core.IsGroupConv(conv) {
		// A 1:1 conversation that the snapshot lacks began after it was
		// read: the device has none of its messages, and each of them was
		// routed to this session (registered before the read), which
		// sets the pusher's last.
		return store.ConvState{Conv: conv}, true, nil
	}
	want := s.inboxReads + 1 // a read that starts after this miss
	for s.inboxRead < want {
		if done := s.inboxDone; done != nil {
			s.mu.Unlock()
			select {
			case <-done:
			case <-ctx.Done():
				s.mu.Lock()
				return store.ConvState{}, false, ctx.Err()
			}
			s.mu.Lock()
			continue
		}
		s.inboxReads++
		n, done := s.inboxReads, make(chan struct{})
		s.inboxDone = done
		s.mu.Unlock()
		inbox, err := s.hub.Store().Inbox(ctx, s.app, s.user, s.device)
		s.mu.Lock()
		s.inboxDone, s.inboxRead, s.inboxErr = nil, n, err
		close(done)
		if err == nil {
			for _, c := range inbox {
				s.mergeInboxLocked(c)
			}
			if s.inbox == nil {
				s.inbox = make(map[string]store.ConvState)
			}
		}
	}
	if s.inboxErr != nil {
		return store.ConvState{}, false, core.StoreError("read inbox", s.inboxErr)
	}
	c, ok := s.inbox[conv]
	return c, ok, nil
}

// mergeInboxLocked records c in the inbox snapshot, keeping the furthest
// of what it held and c: a read of the store may return a cursor older
// than one a retired pusher recorded. s.mu must be held.
func (s *Session) mergeInboxLocked(c store.ConvState) {
	if s.inbox == nil {
		s.inbox = make(map[string]store.ConvState)
	}
	if old, ok := s.inbox[c.Conv]; ok {
		c.LastSeq = max(c.LastSeq, old.LastSeq)
		c.Acked = max(c.Acked, old.Acked)
	}
	s.inbox[c.Conv] = c
}

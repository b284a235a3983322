// Package session is the device layer of qim: one Session per device
// connection. A Session speaks the device protocol on the connection's
// conversation streams (requests, responses, pushes and their
// acknowledgements), keeps those streams as a cache, runs a pusher per
// conversation that delivers messages in order within a window, and bounds
// what it buffers for the device in bytes. It works against the small
// Stream and Conn interfaces, not a transport: quicsrv accepts QUIC
// connections, answers CONNECT and hands each authenticated connection to
// Devices.Open. Everything that does not depend on a device connection
// (authentication, the committer, routing, group and contact rules, caches,
// limits) is the core.Hub's.
package session

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qim-im/qim/core"
	"github.com/qim-im/qim/metrics"
	qimpb "github.com/qim-im/qim/proto"
)

// Config configures the device layer. Zero values take the documented
// defaults.
type Config struct {
	// Hub is the core the sessions run on. Required.
	Hub *core.Hub
	// PushWindow is how many stored messages of one conversation may be in
	// flight to a device, unacknowledged. Zero means 64.
	PushWindow int
	// DeviceMemory bounds what the server buffers for one device, in bytes:
	// messages routed to it and frames waiting for its streams' writers
	// (see budget.go). Every charge also counts against the hub's budget
	// (core.Config.TotalMemory). Zero means 1 MiB.
	DeviceMemory int64
	// PushStreams is how many conversation streams the server keeps open
	// to one device for pushes (streams it opened). To open another, it
	// first finishes the least recently used idle one. Zero means 100, well
	// below the 1,000 streams a device allows.
	PushStreams int
	// StreamIdle is how long a stream the server opened may stay idle
	// (nothing to push, nothing unacknowledged, no request) before the
	// server finishes it. Zero means 60 s.
	StreamIdle time.Duration
	// PeerStreamIdle is the same for streams the device opened, which are
	// the device's to finish; the server finishes them only after this
	// long. Zero means 10 minutes.
	PeerStreamIdle time.Duration
	// CatchUpEvery is, in a cluster (core.Hub.Shared), how often every
	// session re-reads its inbox for messages whose events the router lost
	// without noticing (catchup.go): the bound on how late such a message
	// reaches an online device. Zero means 30 s. On one node there is no
	// such pass.
	CatchUpEvery time.Duration
}

// Devices is the device layer of a server: it opens a Session for each
// authenticated device connection a transport hands it, and keeps track of
// the live ones, to end them when their token is no longer good
// (revoke.go). Create it with NewDevices. Its methods are safe for
// concurrent use.
type Devices struct {
	// Static after construction.
	hub         *core.Hub
	logger      *slog.Logger
	metrics     *metrics.Metrics // nil: off
	maxFrame    int
	window      int
	devMem      int64         // what one session may buffer
	pushStreams int           // streams.go
	streamIdle  time.Duration // for streams the server opened
	peerIdle    time.Duration // for streams the device opened

	// live tracks open sessions and their tokens (revoke.go).
	live liveSessions

	// opened counts sessions opened (successful CONNECTs), for tests and
	// metrics.
	opened atomic.Uint64

	// In a cluster: the catch-up loop (catchup.go), which Close stops.
	catchUpEvery time.Duration
	missed       chan struct{} // capacity 1: a pass is wanted at once
	stop         chan struct{} // closed by Close
	stopListen   func()
	done         sync.WaitGroup
	closeOnce    sync.Once
	passes       atomic.Uint64
}

// NewDevices returns the device layer over cfg.Hub.
func NewDevices(cfg Config) (*Devices, error) {
	if cfg.Hub == nil {
		return nil, errors.New("session: Config.Hub is nil")
	}
	h := cfg.Hub
	d := &Devices{
		hub:         h,
		logger:      h.Logger(),
		metrics:     h.Metrics(),
		maxFrame:    h.MaxFrame(),
		window:      cmp.Or(max(cfg.PushWindow, 0), 64),
		devMem:      cmp.Or(max(cfg.DeviceMemory, 0), 1<<20),
		pushStreams: cmp.Or(max(cfg.PushStreams, 0), 100),
		streamIdle:  cmp.Or(max(cfg.StreamIdle, 0), time.Minute),
		peerIdle:    cmp.Or(max(cfg.PeerStreamIdle, 0), 10*time.Minute),

		catchUpEvery: cmp.Or(max(cfg.CatchUpEvery, 0), 30*time.Second),
		missed:       make(chan struct{}, 1),
		stop:         make(chan struct{}),
	}
	if h.Shared() {
		d.stopListen = h.Router().Listen(devicesListener{d})
		d.done.Go(d.catchUpLoop)
	}
	return d, nil
}

// Close stops the catch-up loop of a cluster's device layer. It does not
// end the sessions: the transport does.
func (d *Devices) Close() {
	d.closeOnce.Do(func() {
		if d.stopListen != nil {
			d.stopListen()
		}
		close(d.stop)
	})
	d.done.Wait()
}

// Hub returns the core the sessions run on.
func (d *Devices) Hub() *core.Hub { return d.hub }

// Opened returns how many sessions (successful CONNECTs) have been opened
// since the Devices was created.
func (d *Devices) Opened() uint64 { return d.opened.Load() }

// Open starts the session of an authenticated device (app is the result of
// core.Hub.Authenticate): it takes the device's next epoch from the store
// (store.Store.NextEpoch), registers the session with the router, has every
// older connection of the same user and device closed with REPLACED once
// this connection's handshake has completed, and (unless send-only) starts
// pushing what the device has not acknowledged. It fails, with an error
// that core.CodeOf maps to STORE_UNAVAILABLE, if the store cannot give the
// epoch; ctx bounds that call only. The transport then hands the session
// every stream the device opens (HandleStream) and calls Close when the
// connection ends.
func (d *Devices) Open(ctx context.Context, app string, c *qimpb.Connect, conn Conn, logger *slog.Logger) (*Session, error) {
	epoch, err := d.hub.Store().NextEpoch(ctx, app, c.User, c.Device)
	if err != nil {
		return nil, core.StoreError("next epoch", err)
	}
	if logger == nil {
		logger = d.logger
	}
	d.opened.Add(1)
	feats, granted := grant(c.Features, conn.Datagrams())
	sctx, cancel := context.WithCancel(context.Background())
	s := &Session{
		dev:      d,
		hub:      d.hub,
		conn:     conn,
		app:      app,
		user:     c.User,
		device:   c.Device,
		sendOnly: c.SendOnly,
		epoch:    epoch,
		logger:   logger,
		ctx:      sctx,
		cancel:   cancel,
		mem:      newDeviceMem(d.devMem, d.hub.Memory()),
		pushers:  make(map[string]*pusher),
		feats:    feats,
		granted:  granted,
	}
	if feats.has(qimpb.Feature_FEATURE_RECEIPTS) || feats.has(qimpb.Feature_FEATURE_TYPING) || feats.has(qimpb.Feature_FEATURE_PRESENCE) {
		s.events = newEventQueue(s, feats.has(qimpb.Feature_FEATURE_DATAGRAMS))
	}
	router := d.hub.Router()
	// Register before reading the inbox, so that nothing committed in
	// between is missed: it is either in the inbox or delivered live.
	s.unregister = router.Register(app, s.user, s)
	d.track(s, c)
	if !s.sendOnly {
		s.presence = d.hub.JoinPresence(app, s.user, s.device)
	} else {
		s.presence = core.NoPresence
	}
	// Replacing the older connection changes state, so a CONNECT that
	// came in 0-RTT (and could be a replay) does it only once the
	// handshake has completed. The epoch, not the order of arrival here,
	// decides which connection is the newer: the announcement of an older
	// one that completes its handshake late closes nothing.
	s.wg.Go(func() {
		if s.handshakeDone(s.ctx) == nil {
			router.Deliver(app, []string{s.user}, core.Event{ReplaceDevice: s.device, ReplaceEpoch: s.epoch})
			s.checkEpoch()
		}
	})
	if !s.sendOnly {
		// With FEATURE_INBOX, Welcome reads the inbox for Connected and
		// catches up from that one read.
		if !feats.has(qimpb.Feature_FEATURE_INBOX) {
			s.wg.Go(s.catchUp)
		}
		if d.hub.Shared() {
			s.wg.Go(func() {
				t := time.NewTimer(settleAfter)
				defer t.Stop()
				select {
				case <-t.C:
					s.recatch(s.ctx)
				case <-s.ctx.Done():
				}
			})
		}
	}
	return s, nil
}

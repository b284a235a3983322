// Package session is the messaging core of qim: it authenticates devices,
// runs their requests, commits messages to the store in groups, and delivers
// them to every device in order. It knows QUIC streams but not how
// connections are accepted; quicsrv does that and hands each authenticated
// connection's streams to a Session.
package session

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qim-im/qim/metrics"
	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// Config configures a Hub. Zero values take the documented defaults.
type Config struct {
	// Store holds everything durable. Required.
	Store store.Store
	// Apps holds the applications' secrets, which Authenticate checks
	// tokens with. Nil means no application: every CONNECT is refused.
	Apps AppKeys
	// Router carries events between sessions. Nil means a LocalRouter.
	Router Router
	// Logger receives the hub's logs. Nil discards them.
	Logger *slog.Logger
	// MaxFrame is the largest frame accepted on a stream. Zero means
	// qimpb.DefaultMaxFrame.
	MaxFrame int
	// PushWindow is how many stored messages of one conversation may be in
	// flight to a device, unacknowledged. Zero means 64.
	PushWindow int
	// GroupCacheGroups is how many groups' recent messages the LRU cache
	// holds, and how many groups' member lists. Zero means 4096.
	GroupCacheGroups int
	// GroupCacheDepth is how many recent messages are cached per group.
	// Zero means 256.
	GroupCacheDepth int
	// GroupCacheBytes bounds the recent-messages cache in bytes, in total;
	// one group holds at most an eighth of it. Zero means 64 MiB.
	GroupCacheBytes int64
	// DeviceMemory bounds what the server buffers for one device, in bytes:
	// messages routed to it and frames waiting for its streams' writers
	// (see budget.go). Zero means 1 MiB.
	DeviceMemory int64
	// TotalMemory bounds the same for all devices together. Zero means
	// 256 MiB. A device that holds nothing may still take one frame, so
	// the bound is TotalMemory plus one frame per device.
	TotalMemory int64
	// MaxBatch is the most messages committed in one store call. Zero means 512.
	MaxBatch int
	// SendRate is how many requests per second one user may make, across
	// all their devices, with bursts of SendBurst. Beyond it, requests are
	// answered RATE_LIMITED. Zero means 1,000 per second with bursts of
	// 2,000; a negative SendRate means no limit.
	SendRate  float64
	SendBurst int
	// MaxGroupMembers is the largest a group may grow. Zero means 10,000.
	MaxGroupMembers int
	// InvitesPerHour is how many groups one user may be added to per hour
	// by GROUP_INVITE from users who are not in their contacts (a token
	// bucket of that size, refilled over the hour); beyond it, such
	// invitations are answered LIMIT_EXCEEDED. Zero means 50; a negative
	// value means no limit.
	InvitesPerHour int
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
	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
	// Metrics records what the hub's sessions do. Nil records nothing.
	Metrics *metrics.Metrics
}

// Hub is the shared state of all sessions of a server. Create it with
// NewHub; Close stops it.
type Hub struct {
	// Static after construction.
	store    store.Store
	apps     AppKeys
	router   Router
	logger   *slog.Logger
	maxFrame int
	window   int
	maxBatch int
	now      func() time.Time
	recent   *recentCache
	groups   *groupCache
	mem      *hubMem       // what all sessions buffer
	devMem   int64         // what one session may buffer
	limits   *userLimits   // nil: no rate limit
	invites  *inviteLimits // nil: no invitation limit
	maxGroup int
	metrics  *metrics.Metrics // nil: off

	// live tracks open sessions and their tokens (revoke.go).
	live        liveSessions
	pushStreams int           // streams.go
	streamIdle  time.Duration // for streams the server opened
	peerIdle    time.Duration // for streams the device opened

	// opened counts sessions opened (successful CONNECTs), for tests and
	// metrics.
	opened atomic.Uint64

	// commits feeds the committer goroutine.
	commits chan *pendingAppend
	stop    chan struct{}
	done    chan struct{}

	closeOnce sync.Once
}

// NewHub returns a hub and starts its committer goroutine, which Close stops.
func NewHub(cfg Config) (*Hub, error) {
	if cfg.Store == nil {
		return nil, errors.New("session: Config.Store is nil")
	}
	h := &Hub{
		store:    cfg.Store,
		apps:     cfg.Apps,
		router:   cfg.Router,
		logger:   cfg.Logger,
		maxFrame: cfg.MaxFrame,
		window:   cfg.PushWindow,
		maxBatch: cfg.MaxBatch,
		now:      cfg.Now,
		metrics:  cfg.Metrics,
		commits:  make(chan *pendingAppend, 1024),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	if h.router == nil {
		h.router = &LocalRouter{}
	}
	if h.logger == nil {
		h.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if h.maxFrame <= 0 {
		h.maxFrame = qimpb.DefaultMaxFrame
	}
	if h.window <= 0 {
		h.window = 64
	}
	if h.maxBatch <= 0 {
		h.maxBatch = 512
	}
	if h.now == nil {
		h.now = time.Now
	}
	h.pushStreams = cmp.Or(max(cfg.PushStreams, 0), 100)
	h.streamIdle = cmp.Or(max(cfg.StreamIdle, 0), time.Minute)
	h.peerIdle = cmp.Or(max(cfg.PeerStreamIdle, 0), 10*time.Minute)
	var err error
	h.maxGroup = cfg.MaxGroupMembers
	if h.maxGroup <= 0 {
		h.maxGroup = 10000
	}
	if cfg.SendRate >= 0 {
		rate, burst := cfg.SendRate, cfg.SendBurst
		if rate == 0 {
			rate, burst = 1000, 2000
		}
		if burst <= 0 {
			burst = max(1, int(2*rate))
		}
		if h.limits, err = newUserLimits(rate, burst); err != nil {
			return nil, err
		}
	}
	if cfg.InvitesPerHour >= 0 {
		perHour := cfg.InvitesPerHour
		if perHour == 0 {
			perHour = 50
		}
		if h.invites, err = newInviteLimits(perHour); err != nil {
			return nil, err
		}
	}
	depth := cfg.GroupCacheDepth
	if depth <= 0 {
		depth = 256
	}
	ngroups := cfg.GroupCacheGroups
	if ngroups <= 0 {
		ngroups = 4096
	}
	h.devMem = cmp.Or(max(cfg.DeviceMemory, 0), 1<<20)
	h.mem = &hubMem{limit: cmp.Or(max(cfg.TotalMemory, 0), 256<<20)}
	cacheBytes := cmp.Or(max(cfg.GroupCacheBytes, 0), 64<<20)
	if h.recent, err = newRecentCache(ngroups, depth, cacheBytes); err != nil {
		return nil, err
	}
	if h.groups, err = newGroupCache(ngroups); err != nil {
		return nil, err
	}
	go h.commitLoop()
	return h, nil
}

// SessionsOpened returns how many sessions (successful CONNECTs) the hub
// has opened since it started.
func (h *Hub) SessionsOpened() uint64 { return h.opened.Load() }

// BufferedBytes returns what the sessions buffer for their devices, in
// bytes, as charged to the hub's memory budget, and what the recent-messages
// cache holds.
func (h *Hub) BufferedBytes() (sessions, cache int64) {
	return h.mem.Used(), h.recent.Bytes()
}

// MaxFrame returns the largest frame the hub's sessions accept.
func (h *Hub) MaxFrame() int { return h.maxFrame }

// Close stops the committer. Appends waiting for it fail with
// STORE_UNAVAILABLE. It does not close the store.
func (h *Hub) Close() error {
	h.closeOnce.Do(func() { close(h.stop) })
	<-h.done
	return nil
}

// pendingAppend is one message waiting for the committer.
type pendingAppend struct {
	app     string
	conv    string
	members []string // users whose inbox gets the conversation (1:1)
	msg     *qimpb.Message
	read    time.Time     // when it was read off the sender's stream (metrics.Now)
	cost    int64         // msgCost of the stored message, once the committer knows it; 0 before
	done    chan struct{} // closed when res and err are set
	res     store.AppendResult
	err     error
}

// submit queues a message for the committer. It blocks while the queue is
// full, which slows the submitting stream only.
func (h *Hub) submit(ctx context.Context, p *pendingAppend) error {
	p.done = make(chan struct{})
	select {
	case h.commits <- p:
		return nil
	case <-h.stop:
		return storeErr("append", store.ErrClosed)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// commitLoop takes queued messages in batches, stores each batch with one
// durable commit, then completes them and routes the new ones, in commit
// order. It is the only goroutine that appends messages, so routing order is
// sequence order and the recent cache is always a suffix of the store.
func (h *Hub) commitLoop() {
	defer close(h.done)
	batch := make([]*pendingAppend, 0, h.maxBatch)
	appends := make([]store.Append, 0, h.maxBatch)
	for {
		batch = batch[:0]
		select {
		case p := <-h.commits:
			batch = append(batch, p)
		case <-h.stop:
			h.failQueued()
			return
		}
	fill:
		for len(batch) < h.maxBatch {
			select {
			case p := <-h.commits:
				batch = append(batch, p)
			default:
				break fill
			}
		}
		appends = appends[:0]
		for _, p := range batch {
			appends = append(appends, store.Append{App: p.app, Conv: p.conv, Members: p.members, Msg: p.msg})
		}
		start := h.metrics.Now()
		results, err := h.store.Append(context.Background(), appends)
		h.metrics.StoreCommit(start, len(appends), err)
		if err == nil && len(results) != len(batch) {
			err = fmt.Errorf("store returned %d results for %d messages", len(results), len(batch))
		}
		if err == nil {
			// Into the recent cache before any sender hears of its
			// message: a GROUP_HISTORY right after the ack must see it.
			for i, p := range batch {
				if m := results[i].Msg; !results[i].Duplicate && m.ToGroup != "" {
					p.cost = msgCost(m)
					h.recent.add(p.app, p.conv, m, p.cost)
				}
			}
		}
		for i, p := range batch {
			switch {
			case err != nil:
				p.err = storeErr("append", err)
			case results[i].Duplicate && convOf(results[i].Msg) != p.conv:
				// The id was used for a message of another conversation:
				// this is not a retry of it.
				p.err = errorf(qimpb.Code_INVALID_ARGUMENT, "client_msg_id already used for another conversation")
			default:
				p.res = results[i]
			}
			close(p.done)
		}
		if err != nil {
			h.logger.Error("append failed; senders told STORE_UNAVAILABLE", "messages", len(batch), "err", err)
			continue
		}
		for i, p := range batch {
			if results[i].Duplicate {
				continue
			}
			h.route(context.Background(), p.app, p.conv, results[i].Msg, p.read, p.cost)
		}
	}
}

// failQueued fails every message still queued at shutdown.
func (h *Hub) failQueued() {
	for {
		select {
		case p := <-h.commits:
			p.err = storeErr("append", store.ErrClosed)
			close(p.done)
		default:
			return
		}
	}
}

// route delivers a message to the users of its conversation: both users of
// a 1:1 conversation (the sender's other devices included) or every member
// of a group. (commitLoop has put stored group messages in the recent
// cache.) read is
// when the message was read off its sender's stream (metrics.Now).
func (h *Hub) route(ctx context.Context, app, conv string, m *qimpb.Message, read time.Time, cost int64) {
	if m.ToGroup != "" {
		g, err := h.group(ctx, app, m.ToGroup)
		if err != nil {
			// The message is stored; members catch up on their next connect.
			h.logger.Warn("route: group members unavailable", "group", m.ToGroup, "err", err)
			return
		}
		f := h.newPushFrame(m, cost)
		h.router.Deliver(app, g.members, Event{Msg: m, Read: read, frame: f, conv: conv})
		f.release(h.mem)
		return
	}
	users := []string{m.ToUser}
	if m.FromUser != m.ToUser {
		users = append(users, m.FromUser)
	}
	f := h.newPushFrame(m, cost)
	h.router.Deliver(app, users, Event{Msg: m, Read: read, frame: f, conv: conv})
	f.release(h.mem)
}

// messages returns stored messages of a conversation after a sequence
// number, from the recent cache when it holds them.
func (h *Hub) messages(ctx context.Context, app, conv string, after uint64, limit int) ([]*qimpb.Message, error) {
	if ms, ok := h.recent.after(app, conv, after, limit); ok {
		return ms, nil
	}
	ms, err := h.store.Messages(ctx, app, conv, after, limit)
	if err != nil {
		return nil, storeErr("read messages", err)
	}
	return ms, nil
}

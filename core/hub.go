// Package core is the transport-free heart of qim: it authenticates
// CONNECTs, validates messages, commits them to the store in groups and
// routes them, in sequence order, to the users' sessions through a Router;
// it decides the group and contact requests, keeps the recent-messages and
// group-member caches and the hub-wide memory budget, and applies the rate
// and invitation limits. It knows neither connections nor streams: the
// device layer (package session) runs one Session per device connection on
// top of it, and a transport (package quicsrv) accepts the connections.
package core

import (
	"cmp"
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/qim-im/qim/metrics"
	"github.com/qim-im/qim/presence"
	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// Config configures a Hub. Zero values take the documented defaults.
type Config struct {
	// Store holds everything durable. Required. The hub does not close it.
	Store store.Store
	// Apps holds the applications' secrets, which Authenticate checks
	// tokens with. Nil means no application: every CONNECT is refused.
	Apps AppKeys
	// Router carries events to the users' sessions. Nil means a
	// LocalRouter.
	Router Router
	// Logger receives the hub's logs. Nil discards them.
	Logger *slog.Logger
	// MaxFrame is the largest frame accepted from a device, and the
	// largest a history page may make. Zero means qimpb.DefaultMaxFrame.
	MaxFrame int
	// GroupCacheGroups is how many groups' recent messages the LRU cache
	// holds, and how many groups' member lists. Zero means 4096.
	GroupCacheGroups int
	// GroupCacheDepth is how many recent messages are cached per group.
	// Zero means 256.
	GroupCacheDepth int
	// GroupCacheTTL is, in a cluster (a Router other than a LocalRouter),
	// how long a group's cached member list is used before it is read
	// again: the bound on how long a change made on another node whose
	// broadcast was lost goes unseen here. Zero means 5 seconds. On one
	// node, entries do not expire: every change passes through this hub.
	GroupCacheTTL time.Duration
	// GroupCacheBytes bounds the recent-messages cache in bytes, in total;
	// one group holds at most an eighth of it. Zero means 64 MiB.
	GroupCacheBytes int64
	// TotalMemory bounds what the sessions of all devices buffer together
	// (the hub's Budget; each device's own bound is the device layer's).
	// Zero means 256 MiB. A device that holds nothing may still take one
	// frame, so the bound is TotalMemory plus one frame per device.
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
	// DedupWindow is how long the store remembers a message's
	// client_msg_id, so that a retry is answered with the original: the
	// hub has the store forget older entries (store.Store.PruneDedup)
	// every DedupWindow/24, at most hourly, the first time a minute after
	// NewHub at most. A retry later than that is stored again, as a new
	// message. Zero means 7 days; negative means never forget.
	DedupWindow time.Duration
	// PushDelay turns on the offline-push outbox: when positive, every
	// message the committer stores gets an outbox job
	// (store.Append.PushAt) due PushDelay after its commit began, written
	// in the message's own durable commit, for a push worker to drain.
	// Zero or negative, the default, adds no jobs.
	PushDelay time.Duration
	// HideReadReceipts hides every user's read cursor from the others,
	// whatever their settings: READ still moves a user's own cursor
	// (unread counts), and nobody learns it (docs/PROTOCOL.md 11.4).
	HideReadReceipts bool
	// PresenceGrace is how long a user whose last connection ended stays
	// online or away to its contacts: a reconnection within it shows
	// nothing. Zero means 5 s.
	PresenceGrace time.Duration
	// PresenceCoalesce is the least time between two presence changes of
	// a user that its contacts are told (the latest state wins). Zero
	// means 1 s.
	PresenceCoalesce time.Duration
	// PresenceGroups shows a user's presence to the members of its groups
	// of at most 500 members too, not only to its contacts.
	PresenceGroups bool
	// NewPresence, if set, returns the presence tracker the hub uses,
	// which calls publish with each change (a tracker shared between
	// nodes, say). Nil means a presence.Local with PresenceGrace.
	NewPresence func(publish func(presence.Change)) presence.Tracker
	// TypingRate and TypingBurst limit TYPING per user and conversation.
	// Zero means 2 per second with bursts of 4.
	TypingRate  float64
	TypingBurst int
	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
	// Metrics records what the hub and its sessions do. Nil records nothing.
	Metrics *metrics.Metrics
}

// Hub is the shared state of all sessions of a server. Create it with
// NewHub; Close stops it. Its methods are safe for concurrent use.
type Hub struct {
	// Static after construction.
	store          store.Store
	apps           AppKeys
	router         Router
	logger         *slog.Logger
	maxFrame       int
	maxBatch       int
	pushDelay      time.Duration // Config.PushDelay; 0: no outbox jobs
	now            func() time.Time
	shared         bool // other nodes share the store (a Router other than a LocalRouter)
	recent         *recentCache
	groups         *groupCache
	mem            *Budget       // what all sessions buffer
	limits         *userLimits   // nil: no rate limit
	invites        *inviteLimits // nil: no invitation limit
	maxGroup       int
	metrics        *metrics.Metrics // nil: off
	hideReads      bool             // Config.HideReadReceipts
	typing         *userLimits      // per user and conversation (typing.go)
	watches        *watches         // receipt watches of this node's sessions (watch.go)
	presence       presence.Tracker // presence.go
	presenceGroups bool             // Config.PresenceGroups

	// stopListen removes the hub from the router's listeners (cluster.go).
	stopListen func()

	// commits feeds the committer goroutine (commit.go).
	commits chan *Pending
	// stop is closed, and ctx cancelled, by Close; wg counts the
	// committer and the prune loop (prune.go).
	stop      chan struct{}
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// NewHub returns a hub and starts its goroutines, the committer and the
// pruner of the de-duplication index, which Close stops.
func NewHub(cfg Config) (*Hub, error) {
	if cfg.Store == nil {
		return nil, errors.New("core: Config.Store is nil")
	}
	h := &Hub{
		store:          cfg.Store,
		apps:           cfg.Apps,
		router:         cfg.Router,
		logger:         cfg.Logger,
		maxFrame:       cmp.Or(max(cfg.MaxFrame, 0), qimpb.DefaultMaxFrame),
		maxBatch:       cmp.Or(max(cfg.MaxBatch, 0), 512),
		pushDelay:      max(cfg.PushDelay, 0),
		hideReads:      cfg.HideReadReceipts,
		presenceGroups: cfg.PresenceGroups,
		now:            cfg.Now,
		metrics:        cfg.Metrics,
		maxGroup:       cmp.Or(max(cfg.MaxGroupMembers, 0), 10000),
		mem:            &Budget{limit: cmp.Or(max(cfg.TotalMemory, 0), 256<<20)},
		commits:        make(chan *Pending, 1024),
		stop:           make(chan struct{}),
	}
	if h.router == nil {
		h.router = &LocalRouter{}
	}
	_, local := h.router.(*LocalRouter)
	h.shared = !local
	if h.logger == nil {
		h.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if h.now == nil {
		h.now = time.Now
	}
	var err error
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
		if h.invites, err = newInviteLimits(cmp.Or(cfg.InvitesPerHour, 50)); err != nil {
			return nil, err
		}
	}
	trate, tburst := cfg.TypingRate, cfg.TypingBurst
	if trate <= 0 {
		trate, tburst = 2, 4
	}
	if h.typing, err = newUserLimits(trate, max(tburst, 1)); err != nil {
		return nil, err
	}
	depth := cmp.Or(max(cfg.GroupCacheDepth, 0), 256)
	ngroups := cmp.Or(max(cfg.GroupCacheGroups, 0), 4096)
	cacheBytes := cmp.Or(max(cfg.GroupCacheBytes, 0), 64<<20)
	if h.recent, err = newRecentCache(ngroups, depth, cacheBytes, !h.shared); err != nil {
		return nil, err
	}
	var ttl time.Duration
	if h.shared {
		ttl = cmp.Or(max(cfg.GroupCacheTTL, 0), 5*time.Second)
	}
	if h.groups, err = newGroupCache(ngroups, ttl); err != nil {
		return nil, err
	}
	h.stopListen = h.router.Listen(hubListener{h})
	h.ctx, h.cancel = context.WithCancel(context.Background())
	h.wg.Go(h.commitLoop)
	h.watches = newWatches(h)
	h.wg.Go(h.watches.run)
	h.startPresence(cfg)
	if window := cmp.Or(cfg.DedupWindow, defaultDedupWindow); window > 0 {
		h.wg.Go(func() { h.pruneLoop(window) })
	}
	return h, nil
}

// Close stops the committer and the pruner and waits for them. Appends
// waiting for the committer fail with STORE_UNAVAILABLE. It does not close
// the store.
func (h *Hub) Close() error {
	h.closeOnce.Do(func() {
		h.stopListen()
		close(h.stop)
		h.cancel()
		h.presence.Close() // after stop: its Publish may wait on the fan-out workers

	})
	h.wg.Wait()
	return nil
}

// Store returns the hub's store.
func (h *Hub) Store() store.Store { return h.store }

// Router returns the hub's router.
func (h *Hub) Router() Router { return h.router }

// Logger returns the hub's logger.
func (h *Hub) Logger() *slog.Logger { return h.logger }

// Metrics returns the hub's metrics; nil records nothing.
func (h *Hub) Metrics() *metrics.Metrics { return h.metrics }

// Now returns the current time by the hub's clock (Config.Now).
func (h *Hub) Now() time.Time { return h.now() }

// MaxFrame returns the largest frame the hub's sessions accept.
func (h *Hub) MaxFrame() int { return h.maxFrame }

// Memory returns the hub-wide memory budget, which every device's budget
// charges too.
func (h *Hub) Memory() *Budget { return h.mem }

// BufferedBytes returns what the sessions buffer for their devices, in
// bytes, as charged to the hub's memory budget, and what the recent-messages
// cache holds.
func (h *Hub) BufferedBytes() (sessions, cache int64) {
	return h.mem.Used(), h.recent.Bytes()
}

// Package cluster runs qim as a cluster of nodes that share one store:
// NATSRouter carries the router's events (core.Router) between the nodes
// over core NATS, and Server embeds the NATS server a node connects to.
package cluster

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/qim-im/qim/core"
)

// RouterConfig configures a NATSRouter. Every field but URL and Conn
// states the default its zero value stands for.
type RouterConfig struct {
	// URL is the NATS server to connect to, or several separated by
	// commas (as nats.Connect takes them). Giving every server of the
	// cluster lets the router start, and reconnect, while some are down;
	// once connected it also learns the other servers of the cluster from
	// the one it is connected to. Ignored when Conn is set.
	URL string
	// Conn, when set, is the connection to use instead of connecting to
	// URL. The router installs its own connection handlers (disconnect,
	// reconnect, error, closed) on it, replacing any, and unsubscribes
	// but does not close it on Close. Without nats.NoEcho the connection
	// hears its own messages, which the router recognises and drops.
	Conn *nats.Conn
	// Name is the node's name, in logs, in its NATS connection's name and
	// in its id (Node). Empty means the host name.
	Name string
	// Logger receives the router's logs. Nil means none.
	Logger *slog.Logger
	// Prefix is the first token of every subject the router uses (see
	// subject.go). Empty means "qim". The nodes of a cluster share it;
	// deployments that share a NATS cluster each have their own.
	Prefix string
	// InboundMessages is the capacity, in messages, of the one channel
	// every subscription delivers into. When it is full, nats.go drops
	// what arrives and listeners are told they missed events. Zero means
	// 65,536.
	InboundMessages int
	// OutboundBytes bounds the outgoing queue of Deliver and Broadcast:
	// encoded events, addressed user ids and a small fixed overhead per
	// call, until published. When it is full, events are dropped and the
	// other nodes are told. Zero means 16 MiB.
	OutboundBytes int
	// MissedInterval is the shortest time between two calls of a
	// listener's Missed: triggers within it are coalesced into one call
	// at its end. Zero means 100 ms.
	MissedInterval time.Duration
	// RegisterTimeout bounds how long Register waits for the other nodes
	// to confirm that their NATS servers route a user's events here, when
	// the user's first session on this node subscribes (see barrier.go).
	// Zero means 2 s.
	RegisterTimeout time.Duration
	// FanoutUsers is the number of addressed users from which Deliver
	// publishes an event once, on the fan-out subject every node hears,
	// with the list of users, instead of once on each user's subject: a
	// group's message costs NATS one message instead of one per member,
	// and every node decodes it once. Zero means 16.
	FanoutUsers int
	// HeartbeatInterval is how often the router tells the other nodes it
	// is there; a node silent for three intervals is taken to be gone, and
	// Register stops waiting for it. Zero means 1 s.
	HeartbeatInterval time.Duration
}

// Defaults of RouterConfig.
const (
	DefaultPrefix            = "qim"
	DefaultInboundMessages   = 65536
	DefaultOutboundBytes     = 16 << 20
	DefaultMissedInterval    = 100 * time.Millisecond
	DefaultRegisterTimeout   = 2 * time.Second
	DefaultHeartbeatInterval = time.Second
	DefaultFanoutUsers       = 16
)

// The NATS connection's options when the router connects itself.
const (
	reconnectWait   = 250 * time.Millisecond
	reconnectJitter = 250 * time.Millisecond
	pingInterval    = 10 * time.Second
	maxPingsOut     = 2
	flusherTimeout  = 10 * time.Second
	closeFlush      = time.Second
)

// NATSRouter is a core.Router for the nodes of a cluster, each with its own
// NATSRouter, connected to one NATS cluster (core NATS, no JetStream).
//
// Deliver hands an event at once to this node's sessions, and queues it
// for the other nodes; a goroutine publishes it on the subject of each
// addressed user. The router holds one subscription for each user with a
// session on this node, shared by the user's sessions, and every
// subscription delivers into one bounded channel that one goroutine
// drains. Delivery between nodes is best-effort: when an event may have
// been lost (a full queue or channel, a reconnection to NATS), the
// listeners of the nodes concerned are told (core.Listener.Missed) and
// have their sessions read the store.
//
// Its methods may be called from any goroutine. Deliver and Broadcast
// never block; Register may wait, up to RouterConfig.RegisterTimeout, for
// the other nodes to confirm a new subscription (see barrier.go).
type NATSRouter struct {
	// Static after construction.
	logger          *slog.Logger
	nc              *nats.Conn
	ownConn         bool
	node            string
	subj            subjects
	missedInterval  time.Duration
	registerTimeout time.Duration
	fanoutUsers     int
	heartbeat       time.Duration
	startedConn     bool          // connected when NewNATSRouter returned
	started         chan struct{} // closed when NewNATSRouter returns
	done            chan struct{} // closed by Close
	wg              sync.WaitGroup
	closeOnce       sync.Once

	// Safe for concurrent use.
	in              chan *nats.Msg // every subscription's, drained by receiveLoop
	out             *outQueue      // drained by publishLoop
	members         *members
	stats           counters
	missedTrigger   chan struct{} // capacity 1: wakes missedLoop
	syncWake        chan struct{} // capacity 1: wakes syncLoop
	syncReplies     chan syncReply
	reportReconnect atomic.Bool // publishLoop is to report a reconnection
	helloPending    atomic.Bool // syncLoop is to publish a hello

	// Owned by syncLoop.
	syncID uint64 // the last barrier's number

	mu        sync.RWMutex
	users     map[userKey]*entry // guarded by mu
	listeners core.Listeners

	// subMu serialises the changes of subscriptions: it is held, outside
	// mu, over the whole of a registration or unregistration.
	subMu     sync.Mutex
	fixedSubs []*nats.Subscription // guarded by subMu: every subject but the users'
	closed    bool                 // guarded by subMu

	syncMu      sync.Mutex
	syncWaiters []chan struct{} // guarded by syncMu: closed when their barrier is answered
}

type userKey struct{ app, user string }

// entry is a user with sessions on this node.
type entry struct {
	sessions []*session         // guarded by NATSRouter.mu; copy-on-write
	sub      *nats.Subscription // guarded by NATSRouter.subMu; nil if subscribing failed
	ready    chan struct{}      // closed once NATS confirmed sub (or did not in time)
}

// session is one registration: its pointer identifies it, whatever the
// receiver's type (a func type cannot be compared).
type session struct{ rc core.Receiver }

// NewNATSRouter returns a router connected to NATS, subscribed to the
// subjects every node hears (broadcasts, missed reports, heartbeats and
// barriers), with its goroutines started; it announces itself to the
// other nodes (Peers). When it connects itself, it keeps reconnecting
// forever, and it returns even if no server can be reached yet (it then
// connects in the background, and tells its listeners they missed events
// once it does). Close stops it.
func NewNATSRouter(cfg RouterConfig) (*NATSRouter, error) {
	r := &NATSRouter{
		logger:          cfg.Logger,
		subj:            newSubjects(cmp.Or(cfg.Prefix, DefaultPrefix)),
		in:              make(chan *nats.Msg, cmp.Or(cfg.InboundMessages, DefaultInboundMessages)),
		out:             newOutQueue(cmp.Or(cfg.OutboundBytes, DefaultOutboundBytes)),
		missedInterval:  cmp.Or(cfg.MissedInterval, DefaultMissedInterval),
		registerTimeout: cmp.Or(cfg.RegisterTimeout, DefaultRegisterTimeout),
		heartbeat:       cmp.Or(cfg.HeartbeatInterval, DefaultHeartbeatInterval),
		fanoutUsers:     cmp.Or(cfg.FanoutUsers, DefaultFanoutUsers),
		syncWake:        make(chan struct{}, 1),
		syncReplies:     make(chan syncReply, 1024),
		started:         make(chan struct{}),
		done:            make(chan struct{}),
		missedTrigger:   make(chan struct{}, 1),
		users:           make(map[userKey]*entry),
	}
	defer close(r.started)
	if r.logger == nil {
		r.logger = slog.New(slog.DiscardHandler)
	}
	name := cfg.Name
	if name == "" {
		name, _ = os.Hostname()
	}
	r.node = name + "-" + randomSuffix()
	r.logger = r.logger.With("node", r.node)
	if cfg.Conn != nil {
		r.nc = cfg.Conn
		r.nc.SetDisconnectErrHandler(r.disconnected)
		r.nc.SetReconnectHandler(r.reconnected)
		r.nc.SetErrorHandler(r.asyncError)
		r.nc.SetClosedHandler(r.connClosed)
	} else {
		nc, err := nats.Connect(cfg.URL,
			nats.Name("qim "+r.node),
			nats.NoEcho(),
			nats.MaxReconnects(-1),
			nats.ReconnectWait(reconnectWait),
			nats.ReconnectJitter(reconnectJitter, reconnectJitter),
			nats.RetryOnFailedConnect(true),
			nats.PingInterval(pingInterval),
			nats.MaxPingsOutstanding(maxPingsOut),
			nats.FlusherTimeout(flusherTimeout),
			nats.ConnectHandler(r.connected),
			nats.DisconnectErrHandler(r.disconnected),
			nats.ReconnectHandler(r.reconnected),
			nats.ErrorHandler(r.asyncError),
			nats.ClosedHandler(r.connClosed),
		)
		if err != nil {
			return nil, fmt.Errorf("cluster: connect to NATS: %w", err)
		}
		r.nc, r.ownConn = nc, true
	}
	r.members = newMembers(3 * r.heartbeat)
	r.startedConn = r.nc.IsConnected()
	for _, s := range []struct {
		subject string
		handler nats.MsgHandler // nil: into the inbound channel
	}{
		{r.subj.broadcast, nil},
		{r.subj.fanout, nil},
		{r.subj.missed, nil},
		{r.subj.node, r.onNode},
		{r.subj.sync, r.onSync},
		{r.subj.syncReplySubject(r.node), r.onSyncReply},
	} {
		subject := s.subject
		var sub *nats.Subscription
		var err error
		if s.handler == nil {
			sub, err = r.nc.ChanSubscribe(subject, r.in)
		} else {
			sub, err = r.nc.Subscribe(subject, s.handler)
		}
		if err != nil {
			for _, s := range r.fixedSubs {
				_ = s.Unsubscribe()
			}
			r.closeConn()
			return nil, fmt.Errorf("cluster: subscribe to %s: %w", subject, err)
		}
		r.fixedSubs = append(r.fixedSubs, sub)
	}
	r.confirm()
	r.wg.Go(r.publishLoop)
	r.wg.Go(r.receiveLoop)
	r.wg.Go(r.missedLoop)
	r.wg.Go(r.syncLoop)
	r.logger.Info("cluster: router started", "connected", r.startedConn, "server", r.nc.ConnectedUrlRedacted())
	return r, nil
}

// Node returns the router's id: its name and a random suffix, unique to
// this router.
func (r *NATSRouter) Node() string { return r.node }

// Peers returns the other nodes this router heard from recently, sorted:
// those its registrations wait for. A node appears once its hello, or a
// heartbeat, has arrived; from then on, what it publishes reaches this
// node's subscriptions of that time.
func (r *NATSRouter) Peers() []string { return r.members.live(time.Now()) }

// Stats returns the router's counters.
func (r *NATSRouter) Stats() Stats { return r.stats.snapshot() }

// Register implements core.Router. The first session of a user on this
// node subscribes to the user's subject, and waits until the other nodes
// (those in Peers) have confirmed that their servers route the user's
// events here (a barrier, see barrier.go), up to RegisterTimeout; or
// not at all while NATS is unreachable: the subscription is made on
// reconnection, and listeners are then told they missed events. Its other
// sessions share that subscription (and wait for the same barrier), and
// the last one to unregister removes it.
func (r *NATSRouter) Register(app, user string, rc core.Receiver) func() {
	k := userKey{app, user}
	r.subMu.Lock()
	r.mu.Lock()
	e := r.users[k]
	first := e == nil
	if first {
		e = &entry{ready: make(chan struct{})}
		r.users[k] = e
	}
	s := &session{rc}
	e.sessions = append(slices.Clip(e.sessions), s)
	r.mu.Unlock()
	if first && !r.closed {
		subject := r.subj.userSubject(app, user)
		sub, err := r.nc.ChanSubscribe(subject, r.in)
		if err != nil {
			r.logger.Warn("cluster: subscribe", "app", app, "user", user, "err", err)
		} else {
			e.sub = sub
			r.stats.subscriptions.Add(1)
		}
	}
	r.subMu.Unlock()
	if first {
		r.awaitSync()
		close(e.ready)
	} else {
		<-e.ready
	}
	var once sync.Once
	return func() { once.Do(func() { r.unregister(k, s) }) }
}

// confirm waits until the NATS server has processed what the connection
// sent so far, if it is connected. When it is not, or does not answer in
// time, events may be missed: the listeners are told.
func (r *NATSRouter) confirm() {
	if !r.nc.IsConnected() {
		return
	}
	if err := r.nc.FlushTimeout(r.registerTimeout); err != nil {
		r.logger.Warn("cluster: confirm subscription", "err", err)
		r.triggerMissed()
	}
}

// unregister removes s from the sessions of k, and the subscription of k
// with the last of them.
func (r *NATSRouter) unregister(k userKey, s *session) {
	r.subMu.Lock()
	defer r.subMu.Unlock()
	sub := r.removeSession(k, s)
	if sub != nil {
		r.stats.subscriptions.Add(-1)
		if err := sub.Unsubscribe(); err != nil && !r.closed {
			r.logger.Warn("cluster: unsubscribe", "app", k.app, "user", k.user, "err", err)
		}
	}
}

// removeSession removes s from the sessions of k, and returns the
// subscription of k if s was the last.
func (r *NATSRouter) removeSession(k userKey, s *session) *nats.Subscription {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.users[k]
	if e == nil {
		return nil
	}
	e.sessions = slices.DeleteFunc(slices.Clone(e.sessions), func(x *session) bool { return x == s })
	if len(e.sessions) > 0 {
		return nil
	}
	delete(r.users, k)
	sub := e.sub
	e.sub = nil
	return sub
}

// Deliver implements core.Router: the sessions of users on this node get
// ev at once, and ev (without Frame) is queued for the other nodes,
// encoded once. When the queue is full, ev is dropped for the other
// nodes, which are told once there is room.
func (r *NATSRouter) Deliver(app string, users []string, ev core.Event) {
	r.deliverLocal(app, users, ev)
	if len(users) == 0 {
		return
	}
	ev.Frame = nil
	if len(users) >= r.fanoutUsers {
		data, err := encodeEvent(app, r.node, ev, users)
		if err != nil {
			r.logger.Error("cluster: deliver", "app", app, "err", err)
			r.dropped(len(users))
			return
		}
		r.enqueue(outItem{subject: r.subj.fanout, data: data, size: itemOverhead + len(data)})
		return
	}
	data, err := encodeEvent(app, r.node, ev, nil)
	if err != nil {
		r.logger.Error("cluster: deliver", "app", app, "err", err)
		r.dropped(len(users))
		return
	}
	size := itemOverhead + len(app) + len(data)
	for _, u := range users {
		size += userOverhead + len(u)
	}
	r.enqueue(outItem{app: app, users: slices.Clone(users), data: data, size: size})
}

// deliverLocal hands ev to the sessions of users in app on this node.
func (r *NATSRouter) deliverLocal(app string, users []string, ev core.Event) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, u := range users {
		if e := r.users[userKey{app, u}]; e != nil {
			for _, s := range e.sessions {
				s.rc.Receive(ev)
			}
		}
	}
}

// Broadcast implements core.Router: this node's listeners get ev at once,
// and ev (without Frame) is queued for the other nodes' listeners.
func (r *NATSRouter) Broadcast(app string, ev core.Event) {
	r.listeners.ReceiveNode(app, ev)
	ev.Frame = nil
	data, err := encodeEvent(app, r.node, ev, nil)
	if err != nil {
		r.logger.Error("cluster: broadcast", "app", app, "err", err)
		r.dropped(1)
		return
	}
	r.enqueue(outItem{subject: r.subj.broadcast, data: data, size: itemOverhead + len(data)})
}

// enqueue queues it for the publisher, or counts it as dropped.
func (r *NATSRouter) enqueue(it outItem) {
	if r.out.push(it) == pushFull {
		r.stats.droppedOut.Add(uint64(it.events()))
	}
}

// dropped counts n events that will not reach the other nodes, and has
// the publisher report them.
func (r *NATSRouter) dropped(n int) {
	r.stats.droppedOut.Add(uint64(n))
	r.out.addDropped(uint64(n))
	r.out.signal()
}

// Listen implements core.Router. l hears broadcasts (this node's
// included), events other nodes deliver to sessions of this node, and
// Missed.
func (r *NATSRouter) Listen(l core.Listener) func() { return r.listeners.Add(l) }

// Close stops the router: it publishes what is queued (giving NATS up to a
// second to take it), stops its goroutines, and closes its connection to
// NATS, or, if it was given one (RouterConfig.Conn), removes its
// subscriptions and handlers from it. Afterwards Deliver and Broadcast
// reach this node only. Close may be called several times; it returns
// the errors of unsubscribing.
func (r *NATSRouter) Close() error {
	var err error
	r.closeOnce.Do(func() {
		r.out.close()
		close(r.done)
		r.wg.Wait()
		r.announce(false, true)
		if r.nc.IsConnected() {
			_ = r.nc.FlushTimeout(closeFlush)
		}
		r.subMu.Lock()
		r.closed = true
		subs := r.fixedSubs
		r.fixedSubs = nil
		r.mu.Lock()
		for _, e := range r.users {
			if e.sub != nil {
				subs = append(subs, e.sub)
				e.sub = nil
				r.stats.subscriptions.Add(-1)
			}
		}
		r.mu.Unlock()
		r.subMu.Unlock()
		if r.ownConn {
			r.closeConn()
			return
		}
		var errs []error
		for _, sub := range subs {
			if e := sub.Unsubscribe(); e != nil {
				errs = append(errs, e)
			}
		}
		r.nc.SetDisconnectErrHandler(nil)
		r.nc.SetReconnectHandler(nil)
		r.nc.SetErrorHandler(nil)
		r.nc.SetClosedHandler(nil)
		if len(errs) > 0 {
			err = fmt.Errorf("cluster: close: %w", errors.Join(errs...))
		}
	})
	return err
}

// closeConn closes the connection the router made.
func (r *NATSRouter) closeConn() {
	if r.ownConn {
		r.nc.Close()
	}
}

// randomSuffix returns 8 random hex digits.
func randomSuffix() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Package client is the Go client of the qim protocol (docs/PROTOCOL.md): it
// dials a server over QUIC, authenticates on the control stream, sends
// requests on one stream per conversation and delivers pushed messages on a
// channel.
//
// It is built for phones: a session moves to a new network without a new
// CONNECT (Client.Migrate, QUIC connection migration; with
// Client.PrepareMigration beforehand, the switch itself costs no round
// trip), survives outages by reconnecting by itself, in 0-RTT when it can,
// with nothing lost or delivered twice (Config.Reconnect), fails over to
// another node of a cluster when its own goes away (Config.Addrs), and
// closes its connection while the app is in the background
// (Client.Background, Client.Foreground).
package client

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	qimpb "github.com/qim-im/qim/proto"
)

// ALPN is the TLS application protocol of qim version 1.
const ALPN = "qim/1"

// closeGrace bounds how long Close waits for the server to close the
// connection after DISCONNECT, and how long the client waits for the server
// to close it after receiving DISCONNECT, before closing it itself.
const closeGrace = time.Second

// Config configures Dial. Only Addr, TLSConfig and the credentials are
// required; every other zero value means the default stated on the field.
type Config struct {
	// Addr is the server's address, host:port. With Addrs, it is the first
	// node of a cluster that the client tries.
	Addr string
	// Addrs are the other nodes of the same cluster (qimd processes that
	// share one store and one certificate), as host:port, tried after Addr
	// in this order. Nil means Addr is the only server.
	//
	// Dial tries Addr, then each of Addrs, until one accepts the session;
	// a refusal every node would repeat (UNAUTHENTICATED, TOKEN_EXPIRED,
	// INVALID_ARGUMENT and the like) ends it at once. With Reconnect, the
	// client keeps to its node, and moves to the next address,
	// round-robin, when its node says GOING_AWAY (it is shutting down) or
	// after an attempt to reconnect to it failed; the backoff counts every
	// failed attempt, whichever the node. Waiting requests are sent again
	// to the new node, a message with its client_msg_id, which the shared
	// store de-duplicates, and the new node pushes what the device has not
	// acknowledged. Migrate never changes the node. A node that dies
	// silently is noticed after IdleTimeout, and an attempt on a node that
	// does not answer lasts the QUIC handshake timeout
	// (QUICConfig.HandshakeIdleTimeout, 5 s by default). To spread devices
	// over the nodes, give each its list in another order.
	Addrs []string
	// TLSConfig is required. It is cloned; NextProtos defaults to ["qim/1"]
	// and ServerName to the host of Addr: the nodes of a cluster share one
	// certificate.
	TLSConfig *tls.Config
	// QUICConfig nil means KeepAlivePeriod KeepAlive, MaxIdleTimeout
	// IdleTimeout, MaxIncomingStreams 1000 (the server opens a stream per
	// conversation it pushes, and finishes idle ones beyond its budget of
	// 100), no unidirectional streams, and datagrams enabled. With
	// datagrams, the keepalives are also sent as datagrams large enough for
	// a restarted server to answer with a stateless reset, so that the
	// client reconnects within a keepalive period instead of its idle
	// timeout; a QUICConfig without EnableDatagrams gets only quic-go's
	// PINGs.
	QUICConfig *quic.Config
	// KeepAlive is how often an idle connection sends a keepalive, when
	// QUICConfig is nil. 0 means 25s, below the 30 s after which many
	// mobile NATs forget a UDP mapping; a negative value sends none.
	KeepAlive time.Duration
	// IdleTimeout is how long a connection may hear nothing from the server
	// before it is considered lost, when QUICConfig is nil. 0 means 60s.
	IdleTimeout time.Duration
	// LocalAddr is the local address of the client's UDP socket: an IP
	// address, with or without a port. "" means any. Migrate changes it.
	LocalAddr string
	// ListenPacket, if set, opens the client's UDP sockets in place of
	// net.ListenUDP, for example in another network namespace, or bound to
	// one network of the device (Android's Network.bindSocket). network is
	// "udp4" or "udp6", the family of the server's address; addr is the
	// local address as host:port (port 0 unless one was given; ":0" for
	// any). The client owns and closes the sockets it returns.
	ListenPacket func(network, addr string) (net.PacketConn, error)

	Org, Appkey, User, Token string
	Device                   string // "" means "default"

	// TokenFunc, if set, returns a fresh token for User. With Reconnect,
	// when the server ends the session or refuses a reconnection with
	// TOKEN_EXPIRED (the token's expiry passed: the server ends sessions
	// then) or UNAUTHENTICATED (the application's secret was rotated, or an
	// operator ended the user's sessions), the client calls it and
	// reconnects with the new token, up to 3 times in a row before giving
	// up. If it returns an error, the session ends with the server's code.
	// Nil means such an end is final.
	TokenFunc func(ctx context.Context) (string, error)

	// SendOnly opens a session that only sends requests: the server pushes
	// nothing to it (Connect.send_only).
	SendOnly bool
	// Features are the kinds of events (receipts, typing, presence; see
	// Events) the client asks for in every CONNECT, its reconnections
	// included (PROTOCOL.md 11.1). Nil means receipts, typing, presence
	// and the inbox, and typing in QUIC datagrams when the QUIC
	// configuration enables datagrams (it does by default); none for a
	// SendOnly session. The server grants those it supports: see Granted.
	Features []qimpb.Feature
	// NoEvents asks for no events at all, whatever Features says: the
	// server then sends the session nothing but what it sent before
	// receipts existed, and Events stays empty.
	NoEvents bool
	// EventQueue is the capacity of the Events channel. 0 means 256; a
	// negative value makes it unbuffered, so that an event is kept only
	// when a receiver is waiting for it. Events never wait for the
	// program: one that finds the channel full is dropped and counted
	// (EventsDropped).
	EventQueue int
	// MaxFrame is the largest frame payload accepted from the server; a
	// larger frame ends its stream. 0 means 4 MiB: the server's own frames
	// are bounded by what it sends (a 10,000-member list is ~660 KiB), not
	// by the max_frame it accepts.
	MaxFrame int
	// Inbox is the capacity of the Messages channel. 0 means 256; a
	// negative value makes it unbuffered, so that a message is acknowledged
	// only once the program has received it.
	Inbox int
	// MaxStreams is how many conversation streams the client keeps open
	// that it opened itself. To open another, it first finishes the least
	// recently used one that has no request waiting for its answer, and
	// opens a new one when it sends there again. 0 means 100, well below
	// the 1,000 the server allows.
	MaxStreams int

	// Reconnect makes the client reconnect by itself when its connection
	// is lost (see Client): false means the session ends with the
	// connection.
	Reconnect bool
	// ReconnectMin and ReconnectMax bound the exponential backoff between
	// reconnection attempts: attempt n waits a random time below
	// min(ReconnectMax, ReconnectMin * 2^n). 0 means 50ms and 30s.
	ReconnectMin, ReconnectMax time.Duration
	// SessionCache keeps TLS session tickets, with which a reconnection
	// sends CONNECT and the first requests in 0-RTT. Share one between
	// Clients to resume across them. nil means TLSConfig.ClientSessionCache,
	// or else a cache of 16 tickets kept by the Client.
	SessionCache tls.ClientSessionCache
	// OnState, if set, is called with each change of the connection's
	// state, in order, from a goroutine of the Client. It must return
	// quickly and must not call Close or Foreground.
	OnState func(State)
	// OnFailover, if set, is called when the server accepted a
	// reconnection on another node than the previous connection's, with
	// both addresses as given in Addr and Addrs, just before OnState
	// reports Connected, from the same goroutine and with the same
	// restrictions.
	OnFailover func(from, to string)

	// Logger nil means discard.
	Logger *slog.Logger
}

// Client is one session of a device: one QUIC connection at a time. Its
// methods are safe for concurrent use.
//
// With Config.Reconnect, the session outlives its connections: when a
// connection is lost for any reason but Close, Background, a refusal that
// would recur (REPLACED, UNAUTHENTICATED, TOKEN_EXPIRED and the like) or a
// protocol error, the client reconnects with exponential backoff and sends
// CONNECT again, to the same node or, with Config.Addrs, to another one
// (see there). Messages stays open, and the server pushes everything the
// device has not acknowledged, which the client de-duplicates by seq, so
// each message is delivered once and in order. Requests waiting for an
// answer when the connection was lost are sent again on the next one if
// they are idempotent (Send, contacts, GROUP_JOIN...), as long as their ctx
// allows; the others (CreateGroup, LeaveGroup, Kick, a Send with
// NoOffline) fail with an error wrapping ErrStreamEnded. Idempotent
// requests may go out in 0-RTT with CONNECT; the others wait for the
// handshake to complete.
//
// Migrate moves the connection to another network without a new CONNECT,
// at once if PrepareMigration probed that network beforehand; Background
// and Foreground close the connection while the app is in the
// background and reconnect when it returns.
type Client struct {
	// Static after Dial.
	cfg Config
	// httpOnce makes http, the HTTPS client of the HTTP API (upload.go).
	httpOnce   sync.Once
	http       *http.Client
	tlsConf    *tls.Config
	quicConf   *quic.Config
	addrs      []string       // the nodes: Config.Addr, then Config.Addrs
	connectMsg *qimpb.Connect // Token guarded by mu (TokenFunc changes it)
	log        *slog.Logger
	me         string // the authenticated user
	device     string // the session's device
	maxFrame   int    // largest frame read from the server
	maxStreams int    // streams kept open that the client opened (Config.MaxStreams)
	msgs       chan *qimpb.Message
	events     chan *qimpb.Event // closed by supervise with msgs (events.go)
	done       chan struct{}     // closed by supervise when every goroutine has returned
	stop       chan struct{}     // closed by Close: stop reconnecting
	kick       chan struct{}     // wakes supervise: Background or Foreground was called
	// presenceTurn is held (a send) while PRESENCE is being said, so that
	// SetPresence and its repetition on a new connection keep their order.
	presenceTurn chan struct{}
	closeOnce    sync.Once

	sendLimit atomic.Int64  // largest frame the server accepts (Connected.max_frame)
	dropped   atomic.Uint64 // events dropped because Events was full

	// marks holds the receipts and presence the client has seen, so that
	// neither goes backwards (events.go). It has its own lock, taken
	// after c.mu when both are held.
	marks marks

	// Guarded by mu.
	mu          sync.Mutex
	cur         *link         // the current connection; nil while there is none
	changed     chan struct{} // closed and replaced when cur, its state or the end changes
	connected   *qimpb.Connected
	highest     map[Peer]uint64 // highest seq delivered, by conversation
	away        bool            // SetPresence(away): said again on each new connection (presence.go)
	localAddr   string          // the address the next socket binds to
	node        int             // index in addrs of the node the next attempt dials (failover.go)
	served      int             // index in addrs of the node of the last accepted connection
	closeCalled bool
	background  bool
	wantDial    bool               // Foreground asks supervise to dial now
	cancelDial  context.CancelFunc // cancels the dial in progress, if any
	dialErrs    int                // failed reconnection attempts, for Foreground
	dialErr     error              // the last one's error
	reconnects  int
	used0RTT    bool
	ended       bool  // set by supervise when the session has ended
	reason      error // why the session ended; nil after Close
}

// Dial connects to the server at cfg.Addr, opens the control stream, sends
// CONNECT and waits for the server's answer. ctx bounds only the connecting;
// the session lasts until Close or until the connection ends (with
// cfg.Reconnect, until a connection ends for good). A refusal by the server
// is returned as an *Error (for example UNAUTHENTICATED). Dial makes one
// attempt per address, each bounded by ctx and 15 s: when cfg.Addr fails,
// it tries each of cfg.Addrs in turn, unless the server refused the
// session for a reason every node shares (see Config.Addrs); if none
// accepts it, the error holds every attempt's.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.TLSConfig == nil {
		return nil, errors.New("qim: Config.TLSConfig is required")
	}
	addrs, err := nodeAddrs(cfg.Addr, cfg.Addrs)
	if err != nil {
		return nil, err
	}
	tlsConf := cfg.TLSConfig.Clone()
	if len(tlsConf.NextProtos) == 0 {
		tlsConf.NextProtos = []string{ALPN}
	}
	if tlsConf.ServerName == "" {
		if host, _, err := net.SplitHostPort(cfg.Addr); err == nil {
			tlsConf.ServerName = host
		}
	}
	switch {
	case cfg.SessionCache != nil:
		tlsConf.ClientSessionCache = cfg.SessionCache
	case tlsConf.ClientSessionCache == nil:
		tlsConf.ClientSessionCache = tls.NewLRUClientSessionCache(16)
	}
	cfg.ReconnectMin = cmp.Or(cfg.ReconnectMin, 50*time.Millisecond)
	cfg.ReconnectMax = cmp.Or(cfg.ReconnectMax, 30*time.Second)
	keepAlive := cmp.Or(cfg.KeepAlive, 25*time.Second)
	if keepAlive < 0 {
		keepAlive = 0
	}
	quicConf := &quic.Config{
		KeepAlivePeriod:       keepAlive,
		MaxIdleTimeout:        cmp.Or(cfg.IdleTimeout, 60*time.Second),
		MaxIncomingStreams:    1000,
		MaxIncomingUniStreams: -1,
		EnableDatagrams:       true, // for keepalives (see link.keepAlive)
	}
	if cfg.QUICConfig != nil {
		quicConf = cfg.QUICConfig.Clone()
	}
	maxFrame := cfg.MaxFrame
	if maxFrame <= 0 {
		maxFrame = 4 << 20
	}
	inbox := cfg.Inbox
	switch {
	case inbox == 0:
		inbox = 256
	case inbox < 0:
		inbox = 0
	}
	eventQueue := cfg.EventQueue
	switch {
	case eventQueue == 0:
		eventQueue = 256
	case eventQueue < 0:
		eventQueue = 0
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}

	c := &Client{
		cfg:      cfg,
		tlsConf:  tlsConf,
		quicConf: quicConf,
		addrs:    addrs,
		connectMsg: &qimpb.Connect{
			Org:      cfg.Org,
			Appkey:   cfg.Appkey,
			User:     cfg.User,
			Token:    cfg.Token,
			Device:   cfg.Device,
			SendOnly: cfg.SendOnly,
			Features: features(cfg, quicConf),
		},
		log:          cfg.Logger.With("user", cfg.User, "device", cmp.Or(cfg.Device, "default")),
		maxFrame:     maxFrame,
		msgs:         make(chan *qimpb.Message, inbox),
		events:       make(chan *qimpb.Event, eventQueue),
		done:         make(chan struct{}),
		stop:         make(chan struct{}),
		kick:         make(chan struct{}, 1),
		presenceTurn: make(chan struct{}, 1),
		changed:      make(chan struct{}),
		highest:      make(map[Peer]uint64),
		localAddr:    cfg.LocalAddr,
	}
	c.maxStreams = cmp.Or(max(cfg.MaxStreams, 0), 100)
	c.sendLimit.Store(qimpb.DefaultMaxFrame)
	l, err := c.dialFirst(ctx)
	if err != nil {
		return nil, err
	}
	c.log.Debug("connected", "server", addrs[l.node], "max_frame", l.connected.GetMaxFrame())
	c.mu.Lock()
	c.setLinkLocked(l)
	c.mu.Unlock()
	go c.supervise(l)
	return c, nil
}

// identify sets the session's user and device from the server's answer to
// the first CONNECT. It is called by Dial before the first connection's
// goroutines start, which read them.
func (c *Client) identify(connected *qimpb.Connected) {
	c.me = cmp.Or(connected.GetUser(), c.cfg.User)
	c.device = cmp.Or(connected.GetDevice(), c.cfg.Device, "default")
	c.log = c.cfg.Logger.With("user", c.me, "device", c.device)
}

// Messages returns the channel of messages the server pushes, in seq order
// per conversation, without duplicates. It is closed when the session ends,
// after the last delivery; it stays open across reconnections. A stored message is acknowledged to the server as
// soon as it is in the channel (see Config.Inbox).
//
// Delivery blocks while the channel is full, which holds back the stream of
// that conversation only: the server slows down through QUIC flow control,
// and the answers to requests sent on that stream wait too. A program that
// makes requests from the goroutine receiving from Messages should size
// Config.Inbox accordingly or make them from another goroutine.
func (c *Client) Messages() <-chan *qimpb.Message { return c.msgs }

// Connected returns the server's answer to the last CONNECT. It must not be
// modified.
func (c *Client) Connected() *qimpb.Connected {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connected
}

// User returns the authenticated user.
func (c *Client) User() string { return c.me }

// Device returns the device of the session, as the server named it.
func (c *Client) Device() string { return c.device }

// Package quicsrv serves the qim protocol over QUIC: it accepts
// connections, authenticates each on its control stream, opens its session
// (package session, the device layer), and hands the session the
// connection's other streams, adapted to session.Stream.
package quicsrv

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"golang.org/x/time/rate"

	"github.com/qim-im/qim/metrics"
	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/session"
)

// ErrServerClosed is returned by Serve and ListenAndServe after Shutdown or
// Close.
var ErrServerClosed = errors.New("quicsrv: Server closed")

// Server serves qim over QUIC. Set its fields before calling Serve; they
// must not change afterwards.
type Server struct {
	// Addr is the UDP address ListenAndServe listens on. Empty means
	// "127.0.0.1:4433".
	Addr string
	// TLSConfig is the server's TLS configuration. Required. NextProtos
	// defaults to "qim/1".
	TLSConfig *tls.Config
	// QUICConfig configures QUIC. Nil means DefaultQUICConfig().
	QUICConfig *quic.Config
	// Devices runs a session for each authenticated connection, on its
	// hub. Required.
	Devices *session.Devices
	// Logger receives the server's logs. Nil discards them.
	Logger *slog.Logger
	// StatelessResetKey, if set, lets the server answer packets of
	// connections it does not know (after a restart) with a stateless
	// reset, so that devices reconnect at once. It must be the same across
	// restarts. Nil disables stateless resets.
	StatelessResetKey *quic.StatelessResetKey
	// ConnectionIDGenerator, if set, makes the connection IDs the server
	// issues (quic.Transport.ConnectionIDGenerator): a QUICLBGenerator,
	// so that a QUIC-aware load balancer routes each packet to this
	// server by its connection ID. Nil means quic-go's, random 4 bytes.
	// Servers behind one balancer must each have their own
	// StatelessResetKey: a packet routed to the wrong server is then
	// answered with a reset the device ignores, instead of one that ends
	// its connection on another server.
	ConnectionIDGenerator quic.ConnectionIDGenerator
	// TokenKey, if set, protects the address-validation tokens the server
	// gives (in a Retry, and in NEW_TOKEN for the device's next
	// connection). Servers with the same key accept each other's tokens,
	// also across restarts. Nil means a random key per Serve.
	TokenKey *quic.TokenGeneratorKey
	// HandshakeRate is the rate of new connection attempts per second
	// above which the server answers with a QUIC Retry, so that a client
	// must prove it owns its address before the server keeps any state for
	// it: under a handshake flood from spoofed addresses, memory stays
	// bounded. Zero means 1,000 per second (bursts of 1,000); a negative
	// rate means every connection is validated.
	HandshakeRate float64
	// AuthTimeout is how long a new connection has to open its control
	// stream and authenticate. Zero means 5 seconds.
	AuthTimeout time.Duration
	// AuthBackoffMax bounds the slow-down of failed CONNECTs from one IP
	// address (see authFailureDelay): the first 5 failures are answered at
	// once, each further one twice as late as the one before, from 50 ms
	// up to AuthBackoffMax. Zero means 3 seconds; negative turns the
	// slow-down off.
	AuthBackoffMax time.Duration
	// Metrics records connections, CONNECTs and Retries. Nil records
	// nothing.
	Metrics *metrics.Metrics
	// MaxUnauthenticated bounds the connections that have not
	// authenticated yet. While that many are waiting, the server accepts
	// no more: new connections wait in quic-go's accept queue (32), and
	// quic-go refuses those beyond it. Zero means 1,000; negative means
	// no bound.
	MaxUnauthenticated int
	// MaxUnauthenticatedPerIP bounds the connections from one IP address
	// that have not authenticated yet; a connection beyond it is closed
	// with RATE_LIMITED as soon as its handshake completes (before that,
	// QUIC cannot carry the code). Authenticated connections do not count, so
	// many devices behind one carrier NAT are not limited by it. Zero
	// means 100; negative means no bound.
	MaxUnauthenticatedPerIP int
	// HTTP3, if set, serves HTTP/3 on the server's socket: Serve offers
	// the ALPN protocol "h3" besides "qim/1", and hands every connection
	// that negotiates it to HTTP3.ServeQUICConn, in a goroutine of the
	// Server. Its Handler, IdleTimeout, MaxHeaderBytes, ConnContext and
	// Logger apply; its Addr, Port, TLSConfig and QUICConfig do not (the
	// Server's TLSConfig and QUICConfig do, see Serve). The Server owns it
	// from Serve on: Shutdown shuts it down (GOAWAY, then waiting for the
	// requests in flight) and Close closes it; it serves nothing after
	// them. While MaxUnauthenticated qim connections wait, the server
	// accepts no connection, HTTP/3 ones included. Nil means qim only.
	HTTP3 *http3.Server
	// MaxHTTP3Conns bounds the HTTP/3 connections open at once. They hold
	// no place among the unauthenticated connections (MaxUnauthenticated):
	// each HTTP request authenticates itself. A connection beyond the
	// bound is closed with H3_EXCESSIVE_LOAD as soon as its handshake
	// completes. Zero means 10,000; negative means no bound.
	MaxHTTP3Conns int

	inShutdown atomic.Bool
	nextConnID atomic.Uint64
	retries    atomic.Uint64 // connection attempts asked to validate their address

	// Guarded by authMu.
	authMu       sync.Mutex
	authFailures *lru.Cache[netip.Addr, *authFailure]

	// Guarded by unauthMu; unauthRoom is signalled when a place frees.
	unauthMu    sync.Mutex
	unauthRoom  *sync.Cond
	unauthTotal int
	unauthByIP  map[netip.Addr]int

	mu        sync.Mutex
	listeners map[*quic.EarlyListener]struct{} // guarded by mu
	conns     map[*serverConn]struct{}         // guarded by mu
	refused   map[*quic.Conn]struct{}          // guarded by mu; refused, waiting for their handshake to close
	h3conns   map[*quic.Conn]struct{}          // guarded by mu; served by HTTP3 (http3.go)
	connsWG   sync.WaitGroup                   // one per goroutine serving or refusing a connection
}

// DefaultQUICConfig returns the QUIC settings qim uses unless told
// otherwise: 0-RTT for resuming devices, timers for phones, and
// flow-control windows sized for chat rather than bulk transfer.
//
// Timers: QUIC uses the smaller of the two sides' idle timeouts, so the
// server offers a long one (5 minutes) and lets each client choose (the Go
// client uses 60 s in the foreground). The server sends no keepalives of
// its own: keeping a phone's NAT mapping open is the phone's decision,
// because every packet wakes its radio; a device that lets its connection
// go resumes in one round trip (0-RTT).
//
// Windows: the connection's window starts small (InitialConnectionWindow),
// because until a device has authenticated the server reads none of its
// conversation streams, and quic-go buffers what arrives on them up to that
// window. Auto-tuning grows it (to 4 MiB) only as the server reads, that
// is, once the device has authenticated.
//
// Datagrams are enabled so that devices can send keepalives large enough
// to be answered with a stateless reset (PROTOCOL.md section 9), which
// the server discards, and typing notifications both ways (section 11).
func DefaultQUICConfig() *quic.Config {
	return &quic.Config{
		Allow0RTT:                      true,
		MaxIdleTimeout:                 5 * time.Minute,
		InitialStreamReceiveWindow:     64 << 10,
		MaxStreamReceiveWindow:         512 << 10,
		InitialConnectionReceiveWindow: InitialConnectionWindow,
		MaxConnectionReceiveWindow:     4 << 20,
		MaxIncomingStreams:             1000,
		MaxIncomingUniStreams:          -1,
		EnableDatagrams:                true,
	}
}

// InitialConnectionWindow is the connection-level flow-control window a
// new connection starts with in DefaultQUICConfig: what an
// unauthenticated connection can make the server buffer.
const InitialConnectionWindow = 32 << 10

// ListenAndServe listens on s.Addr and serves until Shutdown or Close.
func (s *Server) ListenAndServe() error {
	addr := s.Addr
	if addr == "" {
		addr = "127.0.0.1:4433"
	}
	udpAddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return fmt.Errorf("quicsrv: resolve %s: %w", addr, err)
	}
	pc, err := net.ListenUDP("udp", udpAddr)
	if err != nil {
		return fmt.Errorf("quicsrv: listen: %w", err)
	}
	defer pc.Close()
	return s.Serve(pc)
}

// Serve accepts QUIC connections on pc until Shutdown or Close, serving
// each in its own goroutine. It always returns a non-nil error; after
// Shutdown or Close it is ErrServerClosed. The caller keeps ownership of pc.
//
// With HTTP3 set, Serve offers "h3" after the TLSConfig's NextProtos, and
// lets each peer open at least 3 unidirectional streams (HTTP/3's control
// and QPACK streams; QUICConfig.MaxIncomingUniStreams is raised on a
// copy): qim connections refuse those (refuseUniStreams).
func (s *Server) Serve(pc net.PacketConn) error {
	if s.Devices == nil || s.TLSConfig == nil {
		return errors.New("quicsrv: Server needs Devices and TLSConfig")
	}
	if s.inShutdown.Load() {
		return ErrServerClosed
	}
	tr := &quic.Transport{
		Conn:                  pc,
		StatelessResetKey:     s.StatelessResetKey,
		ConnectionIDGenerator: s.ConnectionIDGenerator,
		TokenGeneratorKey:     s.TokenKey,
		VerifySourceAddress:   s.verifySourceAddress(),
	}
	defer tr.Close()
	tlsConf, qconf := s.listenConfigs()
	// Early: a resuming device may send CONNECT and replay-safe requests
	// in 0-RTT; the session defers everything else until the handshake
	// completes (see session.Session).
	ln, err := tr.ListenEarly(tlsConf, qconf)
	if err != nil {
		return fmt.Errorf("quicsrv: listen: %w", err)
	}
	logSocketBuffers(pc, s.logger())
	if !s.trackListener(ln, true) {
		ln.Close()
		return ErrServerClosed
	}
	defer s.trackListener(ln, false)
	s.logger().Info("serving", "addr", pc.LocalAddr().String())
	for {
		// At MaxUnauthenticated, stop accepting until a place frees.
		if !s.waitUnauthRoom() {
			s.connsWG.Wait()
			return ErrServerClosed
		}
		qc, err := ln.Accept(context.Background())
		if err != nil {
			if s.inShutdown.Load() {
				s.connsWG.Wait()
				return ErrServerClosed
			}
			return fmt.Errorf("quicsrv: accept: %w", err)
		}
		// The protocol is known from the server's first flight on, before
		// the handshake completes (and ConnectionState does not wait for
		// it).
		if s.HTTP3 != nil && qc.ConnectionState().TLS.NegotiatedProtocol == http3.NextProtoH3 {
			s.serveHTTP3(qc, qconf.EnableDatagrams && !s.HTTP3.EnableDatagrams)
			continue
		}
		ip, _ := addrIP(qc.RemoteAddr())
		slot := s.takeUnauth(ip)
		if slot == nil {
			s.logger().Debug("too many unauthenticated connections from one address", "remote", qc.RemoteAddr().String())
			s.Metrics.ConnectRefused(qimpb.Code_RATE_LIMITED)
			s.refuse(qc, quic.ApplicationErrorCode(qimpb.Code_RATE_LIMITED), "too many unauthenticated connections from this address")
			continue
		}
		sc := s.newConn(qc, slot)
		if sc == nil {
			s.releaseUnauth(slot)
			qc.CloseWithError(quic.ApplicationErrorCode(qimpb.Code_GOING_AWAY), "server shutting down")
			continue
		}
		go func() {
			defer s.connsWG.Done()
			defer s.untrack(sc)
			// Discard the device's keepalive datagrams as they come, so
			// that quic-go's queue of received datagrams stays empty,
			// and refuse the unidirectional streams it may open for
			// HTTP/3's sake.
			ctx, cancel := context.WithCancel(qc.Context())
			var wg sync.WaitGroup
			if qconf.EnableDatagrams {
				wg.Go(func() { sc.readDatagrams(ctx) })
			}
			if qconf.MaxIncomingUniStreams >= 0 {
				wg.Go(func() { refuseUniStreams(ctx, qc) })
			}
			sc.serve()
			cancel()
			wg.Wait()
		}()
	}
}

// listenConfigs returns the TLS and QUIC configurations Serve listens
// with: copies of TLSConfig and QUICConfig (or DefaultQUICConfig), with
// the ALPN protocols and, with HTTP3, the unidirectional streams that
// HTTP/3 needs.
func (s *Server) listenConfigs() (*tls.Config, *quic.Config) {
	tlsConf := s.TLSConfig.Clone()
	if len(tlsConf.NextProtos) == 0 {
		tlsConf.NextProtos = []string{"qim/1"}
	}
	qconf := s.QUICConfig
	if qconf == nil {
		qconf = DefaultQUICConfig()
	}
	if s.HTTP3 == nil {
		return tlsConf, qconf
	}
	if !slices.Contains(tlsConf.NextProtos, http3.NextProtoH3) {
		tlsConf.NextProtos = append(slices.Clip(tlsConf.NextProtos), http3.NextProtoH3)
	}
	// Zero means quic-go's default, 100.
	if n := qconf.MaxIncomingUniStreams; n < 0 || (n > 0 && n < minHTTP3UniStreams) {
		qconf = qconf.Clone()
		qconf.MaxIncomingUniStreams = minHTTP3UniStreams
	}
	return tlsConf, qconf
}

// discardDatagrams reads and drops the connection's QUIC datagrams until
// ctx ends. Devices send them as keepalives only.
func discardDatagrams(ctx context.Context, qc *quic.Conn) {
	for {
		if _, err := qc.ReceiveDatagram(ctx); err != nil {
			return
		}
	}
}

// Retries returns how many connection attempts the server asked to
// validate their address (QUIC Retry) because of HandshakeRate.
func (s *Server) Retries() uint64 { return s.retries.Load() }

// verifySourceAddress returns the Transport's VerifySourceAddress: it asks
// for address validation when new connections arrive faster than
// HandshakeRate.
func (s *Server) verifySourceAddress() func(net.Addr) bool {
	r := s.HandshakeRate
	if r == 0 {
		r = 1000
	}
	if r < 0 {
		return func(net.Addr) bool {
			s.retries.Add(1)
			s.Metrics.Retry()
			return true
		}
	}
	lim := rate.NewLimiter(rate.Limit(r), max(1, int(r)))
	return func(net.Addr) bool {
		if lim.Allow() {
			return false
		}
		s.retries.Add(1)
		s.Metrics.Retry()
		return true
	}
}

// Shutdown stops accepting connections, tells every connected device that
// the server is going away, shuts HTTP3 down (if set), and waits until
// every connection has closed or ctx ends, when it closes what remains.
func (s *Server) Shutdown(ctx context.Context) error {
	s.inShutdown.Store(true)
	s.wakeUnauthWaiters()
	s.closeListeners()
	for _, sc := range s.snapshot() {
		sc.Disconnect(qimpb.Code_GOING_AWAY, "server shutting down")
	}
	s.closeRefused()
	// HTTP/3 connections get a GOAWAY and end when their requests have
	// (the client closes them then).
	var h3 sync.WaitGroup
	if s.HTTP3 != nil {
		h3.Go(func() { s.HTTP3.Shutdown(ctx) })
	}
	defer h3.Wait()
	done := make(chan struct{})
	go func() {
		s.connsWG.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.Close()
		<-done
		return ctx.Err()
	}
}

// Close closes the listeners, HTTP3 (if set) and every connection at
// once.
func (s *Server) Close() error {
	s.inShutdown.Store(true)
	s.wakeUnauthWaiters()
	s.closeListeners()
	for _, sc := range s.snapshot() {
		sc.qc.CloseWithError(quic.ApplicationErrorCode(qimpb.Code_GOING_AWAY), "server closed")
	}
	s.closeRefused()
	s.closeHTTP3()
	s.connsWG.Wait()
	return nil
}

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return s.Logger
}

func (s *Server) authTimeout() time.Duration {
	if s.AuthTimeout > 0 {
		return s.AuthTimeout
	}
	return 5 * time.Second
}

func (s *Server) trackListener(ln *quic.EarlyListener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.listeners, ln)
		return true
	}
	if s.inShutdown.Load() {
		return false
	}
	if s.listeners == nil {
		s.listeners = make(map[*quic.EarlyListener]struct{})
	}
	s.listeners[ln] = struct{}{}
	return true
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ln := range s.listeners {
		ln.Close()
	}
}

// newConn registers a new connection, which holds slot until it
// authenticates, or returns nil during shutdown.
func (s *Server) newConn(qc *quic.Conn, slot *unauthSlot) *serverConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inShutdown.Load() {
		return nil
	}
	if s.conns == nil {
		s.conns = make(map[*serverConn]struct{})
	}
	id := s.nextConnID.Add(1)
	sc := &serverConn{
		srv:    s,
		qc:     qc,
		logger: s.logger().With("conn", id, "remote", qc.RemoteAddr().String()),
		unauth: slot,
	}
	s.conns[sc] = struct{}{}
	s.connsWG.Add(1)
	s.Metrics.ConnOpened()
	return sc
}

func (s *Server) untrack(sc *serverConn) {
	s.mu.Lock()
	delete(s.conns, sc)
	s.mu.Unlock()
	s.releaseUnauth(sc.unauth) // if it never authenticated
	s.Metrics.ConnClosed()
}

func (s *Server) snapshot() []*serverConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*serverConn, 0, len(s.conns))
	for sc := range s.conns {
		out = append(out, sc)
	}
	return out
}

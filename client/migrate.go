package client

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// maxTransports bounds the quic.Transports of one connection: the one it
// was dialed on, which is never used again once left, and two that new
// paths alternate between, so that three transports mean at most six
// quic-go goroutines however often the device moves. quic-go answers a
// server's PATH_CHALLENGE on the Transport it came in on only for the first
// path created on that Transport, so each Transport keeps its one
// *quic.Path for the connection's life and it is probed again on reuse.
const maxTransports = 3

// prevGrace is how long the socket of the path the connection left stays
// open at least, for the packets the server sent before it saw the new
// path. It is closed after that once the server has left it (see settle).
const prevGrace = 3 * time.Second

// settleMargin is added to two round trips to decide that the server has
// left a path it no longer sends to: it covers the peer's delay of
// acknowledgements (25 ms in quic-go).
const settleMargin = 30 * time.Millisecond

// readyFresh is how long a prepared path may be switched to without being
// probed again: a mobile NAT keeps an idle UDP mapping for 30 s at least,
// and a network that answered that recently most likely still works.
const readyFresh = 20 * time.Second

// Migrate moves the connection to a UDP socket bound to localAddr (an IP
// address, optionally with a port; "" means any): the device's network
// changed. Every stream stays open, and nothing in flight is lost (QUIC
// retransmits what the old network swallowed). The server sees the same
// connection: there is no new CONNECT.
//
// If PrepareMigration prepared localAddr on this connection, and the path
// answered less than 20 s ago, Migrate switches to it at once, without a
// round trip. Otherwise it opens a socket, probes the new path (one round
// trip) and switches to it; ctx bounds the probing, and if the new network
// does not answer, Migrate returns an error and the connection stays on its
// current path. Either way the server moves to the new path when the first
// packet sent there reaches it, which Migrate does not wait for.
//
// Migrate may be called any number of times; concurrent calls, and calls
// of PrepareMigration, are serialised. At most two sockets are open at any
// time: the socket of the current path and either the previous one, for a
// few seconds after a switch, or a prepared one. A migration first waits
// until the server has left the previous path (nothing received on it for
// two round trips plus 30 ms): closing a socket the server still sends to
// can strand the connection, since the server then switches back to that
// path and retires the new one. Migrating to another address than the
// prepared one closes the prepared path.
//
// While the client is not connected (it is reconnecting, or in the
// background), Migrate only records localAddr, which the next connection
// binds to; a reconnection always uses the address given last.
func (c *Client) Migrate(ctx context.Context, localAddr string) error {
	c.mu.Lock()
	if !c.closeCalled && !c.ended {
		c.localAddr = localAddr
	}
	c.mu.Unlock()
	err := c.onPaths(ctx, "migrate", func(ctx context.Context, ps *pathSet) error {
		return ps.migrate(ctx, localAddr)
	})
	if err == nil {
		c.log.Debug("migrated", "local", localAddr)
	}
	return err
}

// PrepareMigration readies a move to localAddr without making it: it opens
// a socket there and probes the path from it to the server (one round
// trip), while the connection stays on its current path. A later Migrate
// to the same address then switches at once. A phone calls it when a second
// network comes up while the current one still works (Android keeps
// cellular up next to Wi-Fi, and reports a network that is about to be
// lost; iOS reports each network's state), so that the switch costs no
// round trip when the current network goes.
//
// The prepared path belongs to the current connection. It holds the
// second socket (see Migrate), so PrepareMigration first waits until the
// server has left the previous path; it replaces a path prepared earlier
// for another address, and probes again one prepared for the same address.
// A prepared path that is never switched to is closed by the next Migrate
// or PrepareMigration to another address, or with the connection. A
// quic-go server answers probes from two new addresses between switches:
// after two prepared paths abandoned, a third new address gets no answer
// for up to 5 s (docs/PROTOCOL.md, section 9). ctx bounds the waiting and
// the probing; on failure nothing is prepared.
// While the client is not connected there is nothing to prepare and
// PrepareMigration returns nil.
func (c *Client) PrepareMigration(ctx context.Context, localAddr string) error {
	err := c.onPaths(ctx, "prepare migration", func(ctx context.Context, ps *pathSet) error {
		return ps.prepare(ctx, localAddr)
	})
	if err == nil {
		c.log.Debug("migration prepared", "local", localAddr)
	}
	return err
}

// onPaths runs f on the path set of the current connection once its
// handshake is complete (RFC 9000, section 9: a connection migrates only
// then; a reconnection may still be in 0-RTT), with ctx cancelled if the
// connection ends. It returns nil at once when there is no connection.
func (c *Client) onPaths(ctx context.Context, op string, f func(context.Context, *pathSet) error) error {
	c.mu.Lock()
	if c.closeCalled || c.ended {
		c.mu.Unlock()
		return c.endErr()
	}
	l := c.cur
	c.mu.Unlock()
	if l == nil {
		return nil
	}
	// Probing does not notice that the connection ended: stop it then.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(l.conn.Context(), func() { cancel(ErrNotConnected) })
	defer stop()
	select {
	case <-l.conn.HandshakeComplete():
	case <-ctx.Done():
		return fmt.Errorf("qim: %s: %w", op, context.Cause(ctx))
	}
	if err := f(ctx, l.paths); err != nil {
		if l.conn.Context().Err() != nil {
			return fmt.Errorf("qim: %s: %w", op, ErrNotConnected)
		}
		return err
	}
	return nil
}

// pathSet holds the UDP sockets and quic.Transports of one connection and
// moves the connection between them.
type pathSet struct {
	// Static after newPathSet.
	raddr  *net.UDPAddr
	listen listenFunc // Config.ListenPacket, or nil
	conn   *quic.Conn // set by dialLink before any migration

	changing sync.Mutex // held by prepare and migrate: one change at a time

	// Guarded by mu.
	mu         sync.Mutex
	trs        []*pathTransport // trs[0] is the dialed transport; at most maxTransports
	active     *pathTransport   // the transport of the active path
	prev       *pathTransport   // the transport left last, while its socket is open
	ready      *pathTransport   // a prepared transport, while its socket is open
	readyAt    time.Time        // when ready's path last answered a probe
	timer      *time.Timer      // detaches prev's socket after prevGrace, once settled
	switchedAt time.Time        // when the connection last switched paths
	closed     bool
}

// pathTransport is a quic.Transport, the socket under it and the one path
// the connection has on it.
type pathTransport struct {
	tr   *quic.Transport
	sock *socket
	// path is nil for the dialed transport, and until first probed. It is
	// set and used by the holder of pathSet.changing.
	path *quic.Path
}

// newPathSet opens a socket on laddr for a connection to raddr, with
// listen when it is not nil, and returns the set with the transport to dial
// on.
func newPathSet(laddr string, raddr *net.UDPAddr, listen listenFunc) (*pathSet, *quic.Transport, error) {
	ps := &pathSet{raddr: raddr, listen: listen}
	udp, err := ps.listenUDP(laddr)
	if err != nil {
		return nil, nil, fmt.Errorf("qim: %w", err)
	}
	pt := newPathTransport(udp)
	ps.trs, ps.active = []*pathTransport{pt}, pt
	return ps, pt.tr, nil
}

// listenFunc is the type of Config.ListenPacket.
type listenFunc = func(network, addr string) (net.PacketConn, error)

func newPathTransport(udp net.PacketConn) *pathTransport {
	sock := newSocket(udp)
	return &pathTransport{tr: &quic.Transport{Conn: sock}, sock: sock}
}

// migrate moves the connection to a socket on laddr: the prepared one if it
// is on laddr and answered within readyFresh, probing it again otherwise,
// or else a new one, probed first. On failure the connection stays where
// it was.
func (ps *pathSet) migrate(ctx context.Context, laddr string) error {
	ps.changing.Lock()
	defer ps.changing.Unlock()

	ps.mu.Lock()
	target, at := ps.readyFor(laddr)
	ps.mu.Unlock()
	if target == nil || time.Since(at) >= readyFresh {
		var err error
		if target, err = ps.prepareLocked(ctx, laddr); err != nil {
			return fmt.Errorf("qim: migrate: %w", err)
		}
	}
	if err := target.path.Switch(); err != nil {
		ps.dropReady()
		return fmt.Errorf("qim: migrate to %q: %w", laddr, err)
	}
	ps.switched(target)
	return nil
}

// prepare opens a socket on laddr and probes the path from it, without
// switching to it, or probes again the path prepared there already.
func (ps *pathSet) prepare(ctx context.Context, laddr string) error {
	ps.changing.Lock()
	defer ps.changing.Unlock()
	if _, err := ps.prepareLocked(ctx, laddr); err != nil {
		return fmt.Errorf("qim: prepare migration: %w", err)
	}
	return nil
}

// prepareLocked makes a probed path on laddr the ready one and returns it:
// the ready path probed again if it is on laddr, or else a new socket on a
// spare transport, once the previous path is settled. On failure nothing is
// ready. ps.changing must be held.
func (ps *pathSet) prepareLocked(ctx context.Context, laddr string) (*pathTransport, error) {
	ps.mu.Lock()
	target, _ := ps.readyFor(laddr)
	ps.mu.Unlock()
	if target == nil {
		ps.dropReady()
		if err := ps.settle(ctx); err != nil {
			return nil, fmt.Errorf("the server still uses the previous path: %w", err)
		}
		udp, err := ps.listenUDP(laddr)
		if err != nil {
			return nil, err
		}
		if target, err = ps.spare(udp); err != nil {
			return nil, err
		}
	}
	err := ps.probe(ctx, target)
	if err != nil {
		ps.dropReady()
		return nil, fmt.Errorf("probe the path from %q: %w", laddr, err)
	}
	return target, nil
}

// probe probes target's path and records it as the ready one.
func (ps *pathSet) probe(ctx context.Context, target *pathTransport) error {
	if target.path == nil {
		p, err := ps.conn.AddPath(target.tr)
		if err != nil {
			return err
		}
		target.path = p
	}
	if err := target.path.Probe(ctx); err != nil {
		return err
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.ready != target {
		return ErrNotConnected // the connection ended meanwhile
	}
	ps.readyAt = time.Now()
	return nil
}

// readyFor returns the ready transport and when its path last answered, if
// its socket is on laddr. ps.mu must be held.
func (ps *pathSet) readyFor(laddr string) (*pathTransport, time.Time) {
	if ps.ready == nil || !sameLocal(laddr, ps.ready.sock.LocalAddr()) {
		return nil, time.Time{}
	}
	return ps.ready, ps.readyAt
}

// dropReady closes the socket of the ready path, if any. The path itself
// stays, unused, until its transport is used again.
func (ps *pathSet) dropReady() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.ready != nil {
		ps.ready.sock.detach()
		ps.ready = nil
	}
}

// settle waits until the server has left the previous path, then closes
// its socket.
func (ps *pathSet) settle(ctx context.Context) error {
	for {
		ps.mu.Lock()
		wait := ps.unsettledLocked()
		if wait <= 0 {
			ps.retireLocked()
			ps.mu.Unlock()
			return nil
		}
		ps.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return context.Cause(ctx)
		}
	}
}

// unsettledLocked returns how much longer the previous path must stay
// quiet before the server is known to have left it: nothing received on it
// for two round trips plus settleMargin, counted from the switch at the
// earliest. It is zero or less when there is no previous path or the server
// has left it. ps.mu must be held.
func (ps *pathSet) unsettledLocked() time.Duration {
	if ps.prev == nil {
		return 0
	}
	quiet := 2*ps.conn.ConnectionStats().SmoothedRTT + settleMargin
	return quiet - min(time.Since(ps.switchedAt), ps.prev.sock.sinceRead())
}

// retireLater closes the socket of left, the previous path, after d, once
// the server has left it.
func (ps *pathSet) retireLater(left *pathTransport, d time.Duration) {
	ps.timer = time.AfterFunc(d, func() {
		ps.mu.Lock()
		defer ps.mu.Unlock()
		if ps.prev != left || ps.closed {
			return
		}
		if wait := ps.unsettledLocked(); wait > 0 {
			ps.retireLater(left, wait)
			return
		}
		ps.retireLocked()
	})
}

// spare attaches udp to a transport the connection does not use and makes
// it the ready one: the one of the two that new paths alternate between
// that is not active, created if need be. The previous path's socket must
// be closed, and nothing ready.
func (ps *pathSet) spare(udp net.PacketConn) (*pathTransport, error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.closed {
		udp.Close()
		return nil, ErrNotConnected
	}
	var pt *pathTransport
	for _, t := range ps.trs[1:] {
		if t != ps.active {
			pt = t
			break
		}
	}
	if pt == nil {
		pt = newPathTransport(udp)
		ps.trs = append(ps.trs, pt)
	} else {
		pt.sock.detach() // a no-op: only the active socket is open
		pt.sock.attach(udp)
	}
	ps.ready = pt
	return pt, nil
}

// switched records that the connection switched to target's path, and
// wakes quic-go's run loop, which applies a switch only when it next wakes:
// closing a fresh, never probed path wakes it and is otherwise a no-op.
func (ps *pathSet) switched(target *pathTransport) {
	ps.mu.Lock()
	left := ps.active
	ps.active, ps.prev, ps.ready = target, left, nil
	ps.switchedAt = time.Now()
	ps.retireLater(left, prevGrace)
	ps.mu.Unlock()
	if p, err := ps.conn.AddPath(target.tr); err == nil {
		p.Close()
	}
}

// retireLocked closes the socket of the previous path. ps.mu must be held.
func (ps *pathSet) retireLocked() {
	if ps.timer != nil {
		ps.timer.Stop()
		ps.timer = nil
	}
	if ps.prev != nil {
		ps.prev.sock.detach()
		ps.prev = nil
	}
}

// close closes every transport and socket. It must be called only once the
// connection has ended: closing a transport closes the connections on it.
func (ps *pathSet) close() {
	ps.mu.Lock()
	ps.closed = true
	ps.retireLocked()
	ps.ready = nil
	trs := ps.trs
	ps.mu.Unlock()
	for _, pt := range trs {
		pt.tr.Close()
		pt.sock.close()
	}
}

// openSockets returns the number of UDP sockets open.
func (ps *pathSet) openSockets() int {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	n := 0
	for _, pt := range ps.trs {
		if pt.sock.isAttached() {
			n++
		}
	}
	return n
}

// listenUDP opens a UDP socket on laddr, of the server address's family.
// laddr is an IP address with or without a port, or "" for any.
func (ps *pathSet) listenUDP(laddr string) (net.PacketConn, error) {
	network := "udp4"
	if ps.raddr.IP.To4() == nil {
		network = "udp6"
	}
	addr := ":0"
	if laddr != "" {
		host, port, err := net.SplitHostPort(laddr)
		if err != nil {
			host, port = strings.Trim(laddr, "[]"), "0"
		}
		addr = net.JoinHostPort(host, port)
	}
	var (
		pc  net.PacketConn
		err error
	)
	if ps.listen != nil {
		pc, err = ps.listen(network, addr)
	} else {
		var local *net.UDPAddr
		if local, err = net.ResolveUDPAddr(network, addr); err == nil {
			pc, err = net.ListenUDP(network, local)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("listen on %q: %w", laddr, err)
	}
	return pc, nil
}

// sameLocal reports whether a socket on have satisfies the local address
// laddr, as Migrate takes it: the same IP address, and the same port if
// laddr has one other than 0. "" matches any.
func sameLocal(laddr string, have net.Addr) bool {
	if laddr == "" {
		return true
	}
	ua, ok := have.(*net.UDPAddr)
	if !ok {
		return false
	}
	host, port, err := net.SplitHostPort(laddr)
	if err != nil {
		host, port = strings.Trim(laddr, "[]"), "0"
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.Equal(ua.IP) && (port == "0" || port == strconv.Itoa(ua.Port))
}

package client

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// maxTransports bounds the quic.Transports of one connection. A migration
// reuses the transport the connection left two migrations ago, so quic-go
// is certain to have stopped sending on it; three transports mean at most
// six quic-go goroutines, however often the device moves.
const maxTransports = 3

// prevGrace is how long the socket of the path the connection left stays
// open at least, for the packets the server sent before it saw the new
// path. It is closed after that once the server has left it (see settle).
const prevGrace = 3 * time.Second

// settleMargin is added to two round trips to decide that the server has
// left a path it no longer sends to: it covers the peer's delay of
// acknowledgements (25 ms in quic-go).
const settleMargin = 30 * time.Millisecond

// Migrate moves the connection to a new UDP socket bound to localAddr
// (an IP address, optionally with a port; "" means any): the device's
// network changed. It probes the new path, switches to it and returns; every
// stream stays open, and nothing in flight is lost (QUIC retransmits what
// the old network swallowed). The server sees the same connection: there is
// no new CONNECT.
//
// ctx bounds the probing of the new path: if the new network does not
// answer, Migrate returns an error and the connection stays on its current
// path. Migrate may be called any number of times; concurrent calls are
// serialised. At most two sockets are open at any time: the socket of the
// current path and, for a few seconds after a switch, the previous one.
// A migration first waits until the server has left the previous path
// (nothing received on it for two round trips plus 30 ms): closing a
// socket the server still sends to can strand the connection, since the
// server then switches back to that path and retires the new one.
//
// While the client is not connected (it is reconnecting, or in the
// background), Migrate only records localAddr, which the next connection
// binds to; a reconnection always uses the address given last.
func (c *Client) Migrate(ctx context.Context, localAddr string) error {
	c.mu.Lock()
	if c.closeCalled || c.ended {
		c.mu.Unlock()
		return c.endErr()
	}
	c.localAddr = localAddr
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
	// A connection migrates only once its handshake is complete (RFC 9000,
	// section 9); a reconnection may still be in 0-RTT.
	select {
	case <-l.conn.HandshakeComplete():
	case <-ctx.Done():
		return fmt.Errorf("qim: migrate: %w", context.Cause(ctx))
	}
	if err := l.paths.migrate(ctx, localAddr); err != nil {
		if l.conn.Context().Err() != nil {
			return fmt.Errorf("qim: migrate: %w", ErrNotConnected)
		}
		return err
	}
	l.log.Debug("migrated", "local", localAddr)
	return nil
}

// pathSet holds the UDP sockets and quic.Transports of one connection and
// moves the connection between them.
type pathSet struct {
	// Static after newPathSet.
	raddr  *net.UDPAddr
	listen listenFunc // Config.ListenPacket, or nil
	conn   *quic.Conn // set by dialLink before any migration

	migrating sync.Mutex // held by migrate, serialising migrations

	// Guarded by mu.
	mu         sync.Mutex
	trs        []*pathTransport // least recently active first; at most maxTransports
	active     *pathTransport   // the transport of the active path
	prev       *pathTransport   // the transport left last, while its socket is open
	path       *quic.Path       // the active path; nil for the one the connection was dialed on
	timer      *time.Timer      // detaches prev's socket after prevGrace, once settled
	switchedAt time.Time        // when the connection last switched paths
	closed     bool
}

// pathTransport is a quic.Transport and the socket under it.
type pathTransport struct {
	tr   *quic.Transport
	sock *socket
}

// newPathSet opens a socket on laddr for a connection to raddr, with
// listen when it is not nil, and returns the set with the transport to dial
// on.
func newPathSet(laddr string, raddr *net.UDPAddr, listen listenFunc) (*pathSet, *quic.Transport, error) {
	ps := &pathSet{raddr: raddr, listen: listen}
	udp, err := ps.listenUDP(laddr)
	if err != nil {
		return nil, nil, err
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

// migrate moves the connection to a new socket on laddr: it waits for the
// server to leave the previous path, probes the new one, switches to it and
// keeps the socket it left open for prevGrace at least. On failure the
// connection stays where it was.
func (ps *pathSet) migrate(ctx context.Context, laddr string) error {
	ps.migrating.Lock()
	defer ps.migrating.Unlock()

	if err := ps.settle(ctx); err != nil {
		return fmt.Errorf("qim: migrate: the server still uses the previous path: %w", err)
	}
	udp, err := ps.listenUDP(laddr)
	if err != nil {
		return fmt.Errorf("qim: migrate: %w", err)
	}
	target, err := ps.prepare(udp)
	if err != nil {
		return err
	}
	path, err := ps.conn.AddPath(target.tr)
	if err == nil {
		if err = path.Probe(ctx); err == nil {
			err = path.Switch()
		}
		if err != nil {
			path.Close()
		}
	}
	if err != nil {
		target.sock.detach()
		return fmt.Errorf("qim: migrate to %q: %w", laddr, err)
	}
	ps.switched(target, path)
	return nil
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

// prepare attaches udp to the transport to migrate to: a new one, or the
// least recently active one once there are maxTransports. The previous
// path's socket must be closed.
func (ps *pathSet) prepare(udp net.PacketConn) (*pathTransport, error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.closed {
		udp.Close()
		return nil, fmt.Errorf("qim: migrate: %w", ErrNotConnected)
	}
	if len(ps.trs) < maxTransports {
		pt := newPathTransport(udp)
		ps.trs = slices.Insert(ps.trs, 0, pt)
		return pt, nil
	}
	pt := ps.trs[0]
	pt.sock.detach() // a no-op: only the active and previous sockets are open
	pt.sock.attach(udp)
	return pt, nil
}

// switched records that the connection switched to path on target, and
// closes the path it left. quic-go applies a switch the next time its run
// loop wakes; closing a path wakes it, so the switch happens now. The
// dialed path has no *quic.Path: closing a fresh, never probed one wakes
// the loop as well and is otherwise a no-op.
func (ps *pathSet) switched(target *pathTransport, path *quic.Path) {
	ps.mu.Lock()
	left, old := ps.active, ps.path
	ps.active, ps.path, ps.prev = target, path, left
	ps.switchedAt = time.Now()
	i := slices.Index(ps.trs, target)
	ps.trs = append(slices.Delete(ps.trs, i, i+1), target)
	ps.retireLater(left, prevGrace)
	ps.mu.Unlock()
	if old != nil {
		old.Close()
	} else if p, err := ps.conn.AddPath(left.tr); err == nil {
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
		return nil, fmt.Errorf("qim: listen on %q: %w", laddr, err)
	}
	return pc, nil
}

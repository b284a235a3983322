package udprelay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"
)

// flow is one client address and the upstream socket that stands for it
// towards the server.
type flow struct {
	// Static after construction.
	client netip.AddrPort

	// upstream is swapped by Rebind and closed by Rebind, the idle reaper or
	// Close; each socket has one readUpstream goroutine.
	upstream   atomic.Pointer[net.UDPConn]
	lastActive atomic.Int64 // Relay.now of the latest datagram either way
}

// touch records activity at now.
func (f *flow) touch(now int64) {
	f.lastActive.Store(now)
}

// Rebind emulates a NAT rebinding: every client flow gets a new upstream
// socket with a new source port, so the server sees each client arrive from
// a new address. The old sockets are closed, so datagrams the server still
// sends to them are lost. Datagrams already waiting leave from the new
// socket. Rebind with no flows does nothing.
func (r *Relay) Rebind() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	var errs []error
	for _, f := range r.flows {
		conn, err := r.listenUpstream()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		old := f.upstream.Swap(conn)
		r.wg.Add(1)
		go r.readUpstream(f, conn)
		old.Close()
	}
	return errors.Join(errs...)
}

// flowFor returns the flow of client, creating it and starting its upstream
// reader if needed. It returns nil when the relay is closed, when MaxFlows
// flows are open or when no upstream socket can be opened.
func (r *Relay) flowFor(client netip.AddrPort) *flow {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	if f := r.flows[client]; f != nil {
		return f
	}
	if len(r.flows) >= MaxFlows {
		return nil
	}
	conn, err := r.listenUpstream()
	if err != nil {
		return nil
	}
	f := &flow{client: client}
	f.upstream.Store(conn)
	f.touch(r.now())
	r.flows[client] = f
	r.wg.Add(1)
	go r.readUpstream(f, conn)
	return f
}

// listenUpstream opens a new upstream socket on an ephemeral loopback port.
func (r *Relay) listenUpstream() (*net.UDPConn, error) {
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(r.bindAddr))
	if err != nil {
		return nil, fmt.Errorf("udprelay: open upstream socket: %w", err)
	}
	tuneBuffers(conn)
	return conn, nil
}

// readUpstream reads the server's datagrams from conn, one of f's upstream
// sockets, and queues them towards f's client. Datagrams from any address
// but the target are ignored. It runs in its own goroutine until conn is
// closed.
func (r *Relay) readUpstream(f *flow, conn *net.UDPConn) {
	defer r.wg.Done()
	buf := make([]byte, readBufSize)
	for errs := 0; errs < maxReadErrors; {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			errs++
			continue
		}
		errs = 0
		if unmap(from) != r.target {
			continue
		}
		f.touch(r.now())
		r.s2c.push(r.newPacket(buf[:n], f))
	}
}

// reapIdleFlows removes flows idle for longer than r.idleTimeout. It runs in
// its own goroutine until Close.
func (r *Relay) reapIdleFlows() {
	defer r.wg.Done()
	t := time.NewTicker(max(r.idleTimeout/4, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-r.done:
			return
		case <-t.C:
			r.removeIdleFlows()
		}
	}
}

// removeIdleFlows removes the flows idle for longer than r.idleTimeout and
// closes their upstream sockets.
func (r *Relay) removeIdleFlows() {
	cutoff := r.now() - int64(r.idleTimeout)
	r.mu.Lock()
	defer r.mu.Unlock()
	for client, f := range r.flows {
		if f.lastActive.Load() < cutoff {
			delete(r.flows, client)
			f.upstream.Load().Close()
		}
	}
}

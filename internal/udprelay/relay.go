// Package udprelay is a UDP relay that emulates a mobile network between a
// QUIC client and server on loopback, for tests and benchmarks on machines
// without netem. It adds delay and jitter, drops, duplicates and reorders
// datagrams, cuts the link on demand and emulates NAT rebinding.
//
// A Relay listens on a client-facing loopback address and forwards each
// client's datagrams to a target server from an upstream socket of its own,
// one per client source address (a flow); replies travel back the same way.
// Only loopback addresses ever receive traffic from a Relay.
//
// Links emulate the device's side: one of its networks going down while
// another stays up, as when a phone leaves Wi-Fi.
package udprelay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// ErrClosed is returned by methods called after Close.
var ErrClosed = errors.New("udprelay: relay closed")

// Defaults and limits.
const (
	// DefaultMaxQueue is the per-direction queue limit when Config.MaxQueue
	// is zero.
	DefaultMaxQueue = 4096
	// FlowIdleTimeout is how long a flow may see no datagram in either
	// direction before it is removed and its upstream socket closed.
	FlowIdleTimeout = 2 * time.Minute
	// MaxFlows bounds the number of client flows; datagrams from further
	// client addresses are dropped and counted in DirectionStats.Errors.
	MaxFlows = 1024

	readBufSize   = 64 << 10 // larger than any UDP datagram
	pooledBufSize = 2048     // covers QUIC's largest datagrams (1452 bytes)
	socketBufSize = 4 << 20  // requested; the kernel may cap it
	maxReadErrors = 100      // consecutive read errors before a reader gives up
)

// Relay forwards UDP datagrams between clients and one server, impaired as
// its Config says. Its methods are safe for concurrent use.
type Relay struct {
	// Static after construction.
	conn        *net.UDPConn   // client-facing socket
	target      netip.AddrPort // server address
	bindAddr    netip.AddrPort // loopback:0 of the target's family, for upstream sockets
	epoch       time.Time      // origin of packet due times
	idleTimeout time.Duration
	done        chan struct{} // closed by Close
	c2s, s2c    *scheduler
	bufs        sync.Pool // of *[]byte with cap pooledBufSize

	// Updated atomically.
	cfg       atomic.Pointer[Config]
	blackhole atomic.Bool
	stats     [2]counters // indexed by direction

	cfgMu sync.Mutex // serializes SetConfig

	mu     sync.Mutex // guards the fields below
	flows  map[netip.AddrPort]*flow
	closed bool

	wg sync.WaitGroup // every goroutine the relay starts
}

// New validates cfg, starts listening on cfg.Listen and starts forwarding.
// The relay's goroutines run until Close.
func New(cfg Config) (*Relay, error) {
	return newRelay(cfg, FlowIdleTimeout)
}

// newRelay is New with a configurable flow idle timeout, for tests.
func newRelay(cfg Config, idleTimeout time.Duration) (*Relay, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Target == "" {
		return nil, errors.New("udprelay: no Target")
	}
	target, err := resolveLoopback(cfg.Target)
	if err != nil {
		return nil, fmt.Errorf("udprelay: target: %w", err)
	}
	if target.Port() == 0 {
		return nil, errors.New("udprelay: target: port 0")
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	listen, err := resolveLoopback(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("udprelay: listen: %w", err)
	}
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(listen))
	if err != nil {
		return nil, fmt.Errorf("udprelay: listen: %w", err)
	}
	if target == unmap(conn.LocalAddr().(*net.UDPAddr).AddrPort()) {
		conn.Close()
		return nil, errors.New("udprelay: target is the relay itself")
	}
	tuneBuffers(conn)

	bind := netip.AddrPortFrom(netip.IPv6Loopback(), 0)
	if target.Addr().Is4() {
		bind = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 0)
	}
	seed := uint64(cfg.Seed)
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	r := &Relay{
		conn:        conn,
		target:      target,
		bindAddr:    bind,
		epoch:       time.Now(),
		idleTimeout: idleTimeout,
		done:        make(chan struct{}),
		flows:       make(map[netip.AddrPort]*flow),
	}
	r.bufs.New = func() any {
		b := make([]byte, pooledBufSize)
		return &b
	}
	r.cfg.Store(&cfg)
	r.c2s = newScheduler(r, clientToServer, seed, r.sendToServer)
	r.s2c = newScheduler(r, serverToClient, seed, r.sendToClient)

	r.wg.Add(4)
	go func() { defer r.wg.Done(); r.c2s.run(r.done) }()
	go func() { defer r.wg.Done(); r.s2c.run(r.done) }()
	go r.readClients()
	go r.reapIdleFlows()
	return r, nil
}

// Addr returns the client-facing address, which clients dial instead of the
// server's.
func (r *Relay) Addr() string {
	return r.conn.LocalAddr().String()
}

// Config returns the current configuration.
func (r *Relay) Config() Config {
	return *r.cfg.Load()
}

// SetConfig changes the impairments at run time: f edits a copy of the
// current Config, which then applies to every datagram that arrives after
// SetConfig returns. Datagrams already waiting keep their send times.
// Changes to Target, Listen and Seed are ignored, and out-of-range values
// are clamped into range. SetConfig is safe for concurrent use; calls are
// serialized.
func (r *Relay) SetConfig(f func(*Config)) {
	r.cfgMu.Lock()
	defer r.cfgMu.Unlock()
	old := r.cfg.Load()
	c := *old
	f(&c)
	c.Target, c.Listen, c.Seed = old.Target, old.Listen, old.Seed
	c.Loss = clamp(c.Loss, 0)
	c.Duplicate = clamp(c.Duplicate, 0)
	c.Reorder = clamp(c.Reorder, 0)
	c.HandshakeLoss = clamp(c.HandshakeLoss, -1)
	c.Delay = max(c.Delay, 0)
	c.Jitter = max(c.Jitter, 0)
	c.MaxQueue = max(c.MaxQueue, 0)
	r.cfg.Store(&c)
}

// Blackhole drops every datagram in both directions while on, including
// those already waiting to be sent, as in a tunnel or outage.
func (r *Relay) Blackhole(on bool) {
	r.blackhole.Store(on)
}

// Stats returns the datagram counts so far.
func (r *Relay) Stats() Stats {
	r.mu.Lock()
	n := len(r.flows)
	r.mu.Unlock()
	return Stats{
		ClientToServer: r.stats[clientToServer].snapshot(),
		ServerToClient: r.stats[serverToClient].snapshot(),
		Flows:          n,
	}
}

// Close stops the relay: it closes every socket, discards datagrams still
// waiting and waits for the relay's goroutines to return. Calls after the
// first return nil.
func (r *Relay) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	flows := r.flows
	r.flows = nil
	r.mu.Unlock()

	close(r.done)
	err := r.conn.Close()
	for _, f := range flows {
		f.upstream.Load().Close()
	}
	r.wg.Wait()
	return err
}

// readClients reads datagrams from the client-facing socket and queues them
// towards the server, opening a flow for each new client address. It runs in
// its own goroutine until the socket is closed.
func (r *Relay) readClients() {
	defer r.wg.Done()
	stats := &r.stats[clientToServer]
	buf := make([]byte, readBufSize)
	for errs := 0; errs < maxReadErrors; {
		n, from, err := r.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			errs++
			continue
		}
		errs = 0
		from = unmap(from)
		if !from.Addr().IsLoopback() {
			continue // never answer anything but loopback
		}
		f := r.flowFor(from)
		if f == nil {
			stats.received.Add(1)
			stats.errors.Add(1)
			continue
		}
		f.touch(r.now())
		r.c2s.push(r.newPacket(buf[:n], f))
	}
}

// sendToServer writes p from its flow's current upstream socket.
func (r *Relay) sendToServer(p *packet) error {
	_, err := p.flow.upstream.Load().WriteToUDPAddrPort(p.data(), r.target)
	return err
}

// sendToClient writes p from the client-facing socket to its flow's client.
func (r *Relay) sendToClient(p *packet) error {
	_, err := r.conn.WriteToUDPAddrPort(p.data(), p.flow.client)
	return err
}

// newPacket copies data into a pooled buffer.
func (r *Relay) newPacket(data []byte, f *flow) packet {
	buf := r.getBuf(len(data))
	copy(*buf, data)
	return packet{buf: buf, n: len(data), flow: f}
}

// getBuf returns a buffer of at least n bytes.
func (r *Relay) getBuf(n int) *[]byte {
	if n > pooledBufSize {
		b := make([]byte, n)
		return &b
	}
	return r.bufs.Get().(*[]byte)
}

// putBuf recycles a buffer from getBuf.
func (r *Relay) putBuf(b *[]byte) {
	if cap(*b) == pooledBufSize {
		r.bufs.Put(b)
	}
}

// now returns the time since r.epoch in nanoseconds, on the monotonic clock.
func (r *Relay) now() int64 {
	return int64(time.Since(r.epoch))
}

// resolveLoopback resolves a UDP address and checks that it is a loopback
// address.
func resolveLoopback(addr string) (netip.AddrPort, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return netip.AddrPort{}, err
	}
	ap := unmap(ua.AddrPort())
	if !ap.Addr().IsLoopback() {
		return netip.AddrPort{}, fmt.Errorf("%s is not a loopback address", addr)
	}
	return ap, nil
}

// unmap turns an IPv4-mapped IPv6 address into plain IPv4.
func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// tuneBuffers asks for large socket buffers so that bursts are not dropped
// by the kernel before the relay reads them. Failures are harmless.
func tuneBuffers(c *net.UDPConn) {
	_ = c.SetReadBuffer(socketBufSize)
	_ = c.SetWriteBuffer(socketBufSize)
}

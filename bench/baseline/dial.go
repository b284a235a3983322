package baseline

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
)

// maxDialing bounds how many connections a load sets up at once: enough to
// keep both cores busy with handshakes (32 reach the rate of 64), and no
// more than quic-go's accept queue holds: a connection that finds it full
// is refused (CONNECTION_REFUSED), which happens when the server's accept
// loop is starved of CPU.
const maxDialing = 32

// sharedTransports is how many UDP sockets the connection-heavy loads
// (Fanout's subscribers, Idle) spread their connections over. quic-go
// demultiplexes a Transport's connections by connection ID, so 10,000
// connections need no 10,000 sockets.
const sharedTransports = 64

// clientQUICConfig returns the clients' QUIC configuration: quic-go's
// defaults, except the 5 minute idle timeout of the server, so that a
// connection held idle does not end after quic-go's 30 seconds.
func clientQUICConfig() *quic.Config {
	return &quic.Config{MaxIdleTimeout: 5 * time.Minute}
}

// clientTLS returns a copy of tlsConf that offers ALPN and keeps no session
// tickets, so that every handshake is a full one.
func clientTLS(tlsConf *tls.Config) *tls.Config {
	c := tlsConf.Clone()
	c.NextProtos = []string{ALPN}
	c.ClientSessionCache = nil
	return c
}

// transports is a pool of client Transports, each on its own UDP socket,
// that dials connections to one server, spreading them round-robin. It is
// safe for concurrent use.
type transports struct {
	// Static after newTransports.
	raddr *net.UDPAddr
	tls   *tls.Config
	qconf *quic.Config
	socks []*net.UDPConn
	trs   []*quic.Transport

	next atomic.Uint64 // the transport of the next dial, modulo len(trs)

	mu    sync.Mutex
	conns []*quic.Conn // dialed, to close; guarded by mu
}

// newTransports opens n UDP sockets on local IP laddr ("" means any) for
// connections to the server at addr.
func newTransports(n int, addr, laddr string, tlsConf *tls.Config) (*transports, error) {
	if tlsConf == nil {
		return nil, errors.New("baseline: no TLS configuration")
	}
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("baseline: resolve %s: %w", addr, err)
	}
	t := &transports{raddr: raddr, tls: clientTLS(tlsConf), qconf: clientQUICConfig()}
	for range n {
		pc, err := listenUDP(laddr)
		if err != nil {
			t.close()
			return nil, err
		}
		t.socks = append(t.socks, pc)
		t.trs = append(t.trs, &quic.Transport{Conn: pc})
	}
	return t, nil
}

// listenUDP opens a UDP socket on laddr, an IP or host:port; "" means any
// address, and no port means any port.
func listenUDP(laddr string) (*net.UDPConn, error) {
	if _, _, err := net.SplitHostPort(laddr); err != nil {
		laddr = net.JoinHostPort(laddr, "0")
	}
	ua, err := net.ResolveUDPAddr("udp", laddr)
	if err != nil {
		return nil, fmt.Errorf("baseline: resolve %s: %w", laddr, err)
	}
	pc, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("baseline: listen: %w", err)
	}
	return pc, nil
}

// dial makes one full handshake with the server on the next transport, and
// remembers the connection for closeConns.
func (t *transports) dial(ctx context.Context) (*quic.Conn, error) {
	tr := t.trs[int(t.next.Add(1)-1)%len(t.trs)]
	qc, err := t.dialOn(ctx, tr)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	t.conns = append(t.conns, qc)
	t.mu.Unlock()
	return qc, nil
}

// dialOn makes one full handshake with the server on tr, one of t's
// transports. The caller closes the connection.
func (t *transports) dialOn(ctx context.Context, tr *quic.Transport) (*quic.Conn, error) {
	qc, err := tr.Dial(ctx, t.raddr, t.tls, t.qconf)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	return qc, nil
}

// closeConns closes every connection dialed so far with code 0, so that
// the server forgets them at once rather than after its idle timeout.
func (t *transports) closeConns() {
	t.mu.Lock()
	conns := t.conns
	t.conns = nil
	t.mu.Unlock()
	for _, qc := range conns {
		qc.CloseWithError(codeOK, "")
	}
}

// close closes every connection, transport and socket.
func (t *transports) close() {
	t.closeConns()
	for _, tr := range t.trs {
		tr.Close()
	}
	for _, pc := range t.socks {
		pc.Close()
	}
}

// dialAttempts is how many times a load tries each connection it sets up
// before giving up, and attemptTimeout bounds one try.
const (
	dialAttempts   = 3
	attemptTimeout = 10 * time.Second
)

// retry calls try up to dialAttempts times, each with attemptTimeout, until
// it succeeds, and returns the last error.
func retry(ctx context.Context, try func(ctx context.Context) error) error {
	var err error
	for attempt := range dialAttempts {
		if attempt > 0 {
			select {
			case <-time.After(time.Duration(attempt) * 100 * time.Millisecond):
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		err = try(actx)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
	}
	return err
}

// forEach calls f(i) for i in [0, n), at most limit at a time, and returns
// the first error; after one, the calls not yet started are skipped.
func forEach(ctx context.Context, n, limit int, f func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := f(ctx, i); err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

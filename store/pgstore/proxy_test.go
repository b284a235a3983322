package pgstore

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// tcpProxy forwards TCP connections to a target, and can cut them and
// refuse new ones, to simulate a lost database.
type tcpProxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup // the accept loop and every forwarding goroutine

	mu     sync.Mutex
	refuse bool                  // guarded by mu
	conns  map[net.Conn]struct{} // guarded by mu; both sides of each connection
}

// startProxy starts a proxy to target on 127.0.0.1:0; it stops when the
// test ends.
func startProxy(t testing.TB, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy: %v", err)
	}
	p := &tcpProxy{ln: ln, target: target, conns: make(map[net.Conn]struct{})}
	p.wg.Go(p.acceptLoop)
	t.Cleanup(p.close)
	return p
}

func (p *tcpProxy) addr() string { return p.ln.Addr().String() }

func (p *tcpProxy) acceptLoop() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			c.Close()
			continue
		}
		p.wg.Go(func() { p.forward(c) })
	}
}

// track records c unless the proxy refuses connections.
func (p *tcpProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.refuse {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *tcpProxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
		c.Close()
	}
}

func (p *tcpProxy) forward(c net.Conn) {
	up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil || !p.track(up) {
		if up != nil {
			up.Close()
		}
		p.untrack(c)
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() { io.Copy(up, c); p.untrack(c, up) })
	wg.Go(func() { io.Copy(c, up); p.untrack(c, up) })
	wg.Wait()
}

// cut closes every forwarded connection.
func (p *tcpProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

// setRefusing makes the proxy close new connections at once (refusing)
// or forward them again.
func (p *tcpProxy) setRefusing(refuse bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refuse = refuse
}

func (p *tcpProxy) close() {
	p.ln.Close()
	p.setRefusing(true)
	p.cut()
	p.wg.Wait()
}

// Package baseline runs qim's benchmark shapes over bare quic-go: a server
// that echoes, fans out, holds idle connections and answers a hello on QUIC
// streams of varint-length-prefixed frames, and the client loads that drive
// it. `qim bench` runs this server as its own process, exactly as it runs
// qimd, and prints every figure of qim as a ratio to the same figure
// measured here, on the same machine in the same command.
//
// The server is quic-go as it comes: its defaults, except a 5 minute idle
// timeout (qim's). It does nothing a QUIC application could skip: no
// protobuf, no store, no authentication.
//
// The first stream of every connection starts with one mode byte:
//
//	'E' echo       every frame read is written back on the stream
//	'S' subscribe  the first frame names a channel; the server answers with
//	               an empty frame once subscribed, then writes every frame
//	               published on the channel
//	'P' publish    the first frame names a channel; every later frame is
//	               written to each of its subscribers
//	'I' idle       the server answers with one byte 'I' and holds the
//	               connection and stream open
//	'H' hello      one frame in, the same frame back (a stand-in for qim's
//	               CONNECT and CONNECTED), then wait for the client to close
//
// A frame is a varint length (encoding/binary's Uvarint, as qim's) followed
// by that many bytes, at most 64 KiB.
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

// ErrServerClosed is returned by Serve after Close, or once its context
// ends.
var ErrServerClosed = errors.New("baseline: Server closed")

// Server is the bare quic-go server of the baseline. Listen creates one;
// Serve runs it.
type Server struct {
	// Static after Listen.
	pc  *net.UDPConn
	tr  *quic.Transport
	ln  *quic.EarlyListener
	hub *hub // the fan-out channels; has its own lock

	// echoed, if not nil, is called with the client's address for every
	// frame echoed. Tests set it before Serve.
	echoed func(net.Addr)

	accepted    atomic.Uint64
	open        atomic.Int64
	idle        atomic.Int64
	subscribers atomic.Int64
	hellos      atomic.Uint64

	mu       sync.Mutex
	closed   bool                    // guarded by mu
	conns    map[*quic.Conn]struct{} // guarded by mu
	connsWG  sync.WaitGroup          // one per serveConn goroutine; Add only under mu while !closed
	teardown sync.Once
}

// QUICConfig returns the server's QUIC configuration: quic-go's defaults
// (100 incoming bidirectional streams, 512 KiB initial stream window growing
// to 6 MiB, no 0-RTT, no keep-alives), except the 5 minute idle timeout qim
// offers. Every shape uses one stream per connection, so no limit needs
// raising.
func QUICConfig() *quic.Config {
	return &quic.Config{MaxIdleTimeout: 5 * time.Minute}
}

// Listen opens a UDP socket on addr and listens for QUIC connections on it
// with tlsConf, whose NextProtos is replaced by ALPN on a copy. The server
// accepts nothing until Serve is called.
func Listen(addr string, tlsConf *tls.Config) (*Server, error) {
	if tlsConf == nil {
		return nil, errors.New("baseline: Listen needs a TLS configuration")
	}
	udpAddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("baseline: resolve %s: %w", addr, err)
	}
	pc, err := net.ListenUDP("udp", udpAddr)
	if err != nil {
		return nil, fmt.Errorf("baseline: listen: %w", err)
	}
	conf := tlsConf.Clone()
	conf.NextProtos = []string{ALPN}
	tr := &quic.Transport{Conn: pc}
	ln, err := tr.ListenEarly(conf, QUICConfig())
	if err != nil {
		tr.Close()
		pc.Close()
		return nil, fmt.Errorf("baseline: listen: %w", err)
	}
	return &Server{pc: pc, tr: tr, ln: ln, hub: newHub(), conns: make(map[*quic.Conn]struct{})}, nil
}

// Addr returns the UDP address the server listens on.
func (s *Server) Addr() net.Addr { return s.pc.LocalAddr() }

// Serve accepts connections until Close is called or ctx ends, when it
// closes the server. Each connection is served by its own goroutine; Serve
// returns once they have all returned, with ErrServerClosed, or with the
// error that stopped it accepting. Call it once.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	for {
		qc, err := s.ln.Accept(context.Background())
		if err != nil {
			closed := s.isClosed()
			s.Close()
			if closed {
				return ErrServerClosed
			}
			return fmt.Errorf("baseline: accept: %w", err)
		}
		if !s.track(qc) {
			qc.CloseWithError(0, "server closed")
			continue
		}
		go func() {
			defer s.connsWG.Done()
			defer s.untrack(qc)
			s.serveConn(qc)
		}()
	}
}

// Close stops accepting connections, closes every connection and the
// socket, and waits until the goroutines serving them have returned. It
// may be called more than once, and concurrently with Serve.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	conns := make([]*quic.Conn, 0, len(s.conns))
	for qc := range s.conns {
		conns = append(conns, qc)
	}
	s.mu.Unlock()
	s.ln.Close()
	for _, qc := range conns {
		qc.CloseWithError(0, "server closed")
	}
	s.connsWG.Wait()
	s.teardown.Do(func() {
		s.tr.Close()
		s.pc.Close()
	})
	return nil
}

// Stats are the server's counters.
type Stats struct {
	Accepted    uint64 // connections accepted since Listen
	Open        int64  // connections being served now
	Idle        int64  // idle connections held now (mode 'I')
	Subscribers int64  // fan-out subscribers now (mode 'S')
	Hellos      uint64 // hello round trips answered since Listen (mode 'H')
}

// Stats returns the server's counters. It may be called at any time.
func (s *Server) Stats() Stats {
	return Stats{
		Accepted:    s.accepted.Load(),
		Open:        s.open.Load(),
		Idle:        s.idle.Load(),
		Subscribers: s.subscribers.Load(),
		Hellos:      s.hellos.Load(),
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// track registers a new connection, or returns false once the server is
// closed.
func (s *Server) track(qc *quic.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[qc] = struct{}{}
	s.connsWG.Add(1)
	s.accepted.Add(1)
	s.open.Add(1)
	return true
}

func (s *Server) untrack(qc *quic.Conn) {
	s.mu.Lock()
	delete(s.conns, qc)
	s.mu.Unlock()
	s.open.Add(-1)
}

package quicsrv

import (
	"context"
	"sync"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	qimpb "github.com/qim-im/qim/proto"
)

// HTTP/3 shares the server's QUIC listener (Server.HTTP3): Serve dispatches
// each connection on its ALPN protocol, "h3" here, "qim/1" to serveConn.
const (
	// defaultMaxHTTP3Conns is MaxHTTP3Conns when it is zero.
	defaultMaxHTTP3Conns = 10_000
	// minHTTP3UniStreams is the number of unidirectional streams an HTTP/3
	// client must be allowed to open: its control stream and its QPACK
	// encoder and decoder streams (RFC 9114 section 6.2, RFC 9204
	// section 4.2).
	minHTTP3UniStreams = 3
)

// serveHTTP3 serves qc, which negotiated HTTP/3, with s.HTTP3 in a
// goroutine counted in connsWG, which ends when the connection has closed.
// It closes qc at once during shutdown, and refuses it with
// H3_EXCESSIVE_LOAD when MaxHTTP3Conns are open. With discard set, the
// goroutine also drops the QUIC datagrams qc receives (HTTP3 reads none),
// so that they do not queue.
func (s *Server) serveHTTP3(qc *quic.Conn, discard bool) {
	switch ok, full := s.trackHTTP3(qc); {
	case full:
		s.logger().Debug("too many HTTP/3 connections", "remote", qc.RemoteAddr().String())
		s.refuse(qc, quic.ApplicationErrorCode(http3.ErrCodeExcessiveLoad), "too many HTTP/3 connections")
		return
	case !ok:
		qc.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "server shutting down")
		return
	}
	go func() {
		defer s.connsWG.Done()
		defer s.untrackHTTP3(qc)
		ctx, cancel := context.WithCancel(qc.Context())
		var wg sync.WaitGroup
		if discard {
			wg.Go(func() { discardDatagrams(ctx, qc) })
		}
		if err := s.HTTP3.ServeQUICConn(qc); err != nil {
			s.logger().Debug("HTTP/3 connection ended", "remote", qc.RemoteAddr().String(), "err", err)
		}
		// ServeQUICConn returns without closing qc when HTTP3 was shut
		// down before it started, or could not open its control stream.
		qc.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "")
		cancel()
		wg.Wait()
	}()
}

// trackHTTP3 registers qc as served by HTTP3 and counts its goroutine in
// connsWG. It returns ok false during shutdown, and full true (and ok
// false) when MaxHTTP3Conns are open.
func (s *Server) trackHTTP3(qc *quic.Conn) (ok, full bool) {
	limit := s.MaxHTTP3Conns
	if limit == 0 {
		limit = defaultMaxHTTP3Conns
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inShutdown.Load() {
		return false, false
	}
	if limit > 0 && len(s.h3conns) >= limit {
		return false, true
	}
	if s.h3conns == nil {
		s.h3conns = make(map[*quic.Conn]struct{})
	}
	s.h3conns[qc] = struct{}{}
	s.connsWG.Add(1)
	return true, false
}

func (s *Server) untrackHTTP3(qc *quic.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.h3conns, qc)
}

// closeHTTP3 closes HTTP3, which ends the requests in flight and closes
// the connections it serves, and then closes any connection it had not
// started serving yet. It is part of Close.
func (s *Server) closeHTTP3() {
	if s.HTTP3 == nil {
		return
	}
	s.HTTP3.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for qc := range s.h3conns {
		qc.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "server closed")
	}
}

// refuseUniStreams stops every unidirectional stream the peer of a qim
// connection opens, with PROTOCOL_VIOLATION (STOP_SENDING; the peer's
// writes fail with that stream error code), until ctx ends. qim uses no
// unidirectional streams; the listener lets peers open a few only for
// HTTP/3's sake (Server.HTTP3), so each is refused as soon as it arrives,
// and its credit comes back to the peer once it has reset it.
func refuseUniStreams(ctx context.Context, qc *quic.Conn) {
	for {
		str, err := qc.AcceptUniStream(ctx)
		if err != nil {
			return
		}
		str.CancelRead(quic.StreamErrorCode(qimpb.Code_PROTOCOL_VIOLATION))
	}
}

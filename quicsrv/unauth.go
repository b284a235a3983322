package quicsrv

import (
	"net/netip"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	qimpb "github.com/qim-im/qim/proto"
)

// Unauthenticated connections are bounded twice: in total and per source
// IP address. Until CONNECT succeeds, quic-go buffers whatever a
// connection sends on streams the server has not accepted yet (up to the
// connection's flow-control window), so each such connection costs memory
// that no account is answerable for.
const (
	defaultMaxUnauthenticated      = 1000
	defaultMaxUnauthenticatedPerIP = 100
	// refuseWait bounds how long a refused connection is kept for its
	// handshake to complete, so that its close can carry a code.
	refuseWait = time.Second
	// maxRefusing bounds the refused connections waiting for their
	// handshake; beyond it a refused connection is closed at once, without
	// the code.
	maxRefusing = 100
)

// unauthSlot is the place of one connection that has not authenticated
// yet. It is released once, when the connection authenticates or ends.
type unauthSlot struct {
	ip   netip.Addr
	once sync.Once
}

// unauthLimits returns the total and per-address caps in force; a
// negative value means no cap.
func (s *Server) unauthLimits() (total, perIP int) {
	total, perIP = s.MaxUnauthenticated, s.MaxUnauthenticatedPerIP
	if total == 0 {
		total = defaultMaxUnauthenticated
	}
	if perIP == 0 {
		perIP = defaultMaxUnauthenticatedPerIP
	}
	return total, perIP
}

// waitUnauthRoom blocks while the server holds as many unauthenticated
// connections as MaxUnauthenticated allows, so that Serve stops accepting
// (new connections wait in quic-go's accept queue, and quic-go refuses
// them once that is full). It returns false when the server is closing.
func (s *Server) waitUnauthRoom() bool {
	total, _ := s.unauthLimits()
	s.unauthMu.Lock()
	defer s.unauthMu.Unlock()
	for total > 0 && s.unauthTotal >= total && !s.inShutdown.Load() {
		s.unauthCond().Wait()
	}
	return !s.inShutdown.Load()
}

// takeUnauth records a new unauthenticated connection from ip. It returns
// nil when ip already has MaxUnauthenticatedPerIP of them.
func (s *Server) takeUnauth(ip netip.Addr) *unauthSlot {
	_, perIP := s.unauthLimits()
	s.unauthMu.Lock()
	defer s.unauthMu.Unlock()
	if perIP > 0 && s.unauthByIP[ip] >= perIP {
		return nil
	}
	if s.unauthByIP == nil {
		s.unauthByIP = make(map[netip.Addr]int)
	}
	s.unauthByIP[ip]++
	s.unauthTotal++
	return &unauthSlot{ip: ip}
}

// releaseUnauth gives back slot's place. It may be called more than once.
func (s *Server) releaseUnauth(slot *unauthSlot) {
	if slot == nil {
		return
	}
	slot.once.Do(func() {
		s.unauthMu.Lock()
		defer s.unauthMu.Unlock()
		if s.unauthByIP[slot.ip]--; s.unauthByIP[slot.ip] <= 0 {
			delete(s.unauthByIP, slot.ip)
		}
		s.unauthTotal--
		s.unauthCond().Signal()
	})
}

// wakeUnauthWaiters wakes every Serve waiting for room, at shutdown.
func (s *Server) wakeUnauthWaiters() {
	s.unauthMu.Lock()
	defer s.unauthMu.Unlock()
	s.unauthCond().Broadcast()
}

// unauthCond returns the condition Serve waits on for room. s.unauthMu
// must be held.
func (s *Server) unauthCond() *sync.Cond {
	if s.unauthRoom == nil {
		s.unauthRoom = sync.NewCond(&s.unauthMu)
	}
	return s.unauthRoom
}

// authenticated releases sc's unauthenticated place: it is called once
// CONNECT has succeeded.
func (s *Server) authenticated(sc *serverConn) { s.releaseUnauth(sc.unauth) }

// refuse closes qc with code. Until the handshake completes, QUIC closes a
// connection with a bare APPLICATION_ERROR, without the code (RFC 9000
// section 10.2.3), so refuse waits for the handshake, at most refuseWait,
// in a goroutine counted in connsWG. At most maxRefusing wait: a peer
// that never completes its handshakes cannot make refusals pile up.
func (s *Server) refuse(qc *quic.Conn, code quic.ApplicationErrorCode, reason string) {
	s.mu.Lock()
	if s.inShutdown.Load() {
		s.mu.Unlock()
		qc.CloseWithError(quic.ApplicationErrorCode(qimpb.Code_GOING_AWAY), "server shutting down")
		return
	}
	if len(s.refused) >= maxRefusing {
		s.mu.Unlock()
		qc.CloseWithError(code, reason)
		return
	}
	if s.refused == nil {
		s.refused = make(map[*quic.Conn]struct{})
	}
	s.refused[qc] = struct{}{}
	s.connsWG.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.connsWG.Done()
		t := time.NewTimer(refuseWait)
		defer t.Stop()
		select {
		case <-qc.HandshakeComplete():
		case <-qc.Context().Done():
		case <-t.C:
		}
		qc.CloseWithError(code, reason)
		s.mu.Lock()
		delete(s.refused, qc)
		s.mu.Unlock()
	}()
}

// closeRefused closes the refused connections still waiting, at shutdown.
func (s *Server) closeRefused() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for qc := range s.refused {
		qc.CloseWithError(quic.ApplicationErrorCode(qimpb.Code_GOING_AWAY), "server shutting down")
	}
}

package client

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// socket is the net.PacketConn a quic.Transport of the client reads and
// writes through. The UDP socket behind it can be detached (closed) and
// another one attached later, without the Transport noticing: this is how
// the client releases the socket of a network it has left while quic-go
// still holds the Transport (closing a Transport, or letting its read loop
// see an error, would close the connection registered on it).
//
// While detached, ReadFrom blocks until a socket is attached, a read
// deadline is set (quic-go's Transport.Close sets one to stop its read
// loop; ReadFrom then returns a timeout that quic-go treats as temporary),
// or the socket is closed; WriteTo drops the datagram and reports success.
// The methods are safe for concurrent use.
//
// quic-go sees a plain net.PacketConn, so it reads one datagram per call
// and uses neither GSO nor ECN nor path MTU discovery (packets stay at
// 1,280 bytes): nothing an IM client needs, and BenchmarkPair shows no
// difference within its noise.
type socket struct {
	born     time.Time    // static: the origin of lastRead
	lastRead atomic.Int64 // when a datagram was last read, since born

	mu       sync.Mutex
	udp      net.PacketConn // nil while detached
	local    net.Addr       // the address of the last socket attached
	attached chan struct{}  // closed when a socket is attached
	wake     chan struct{}  // closed while a read deadline is set
	deadline time.Time      // the read deadline, applied to every socket attached
	rbuf     int            // receive buffer size asked for by quic-go, applied likewise
	wbuf     int            // send buffer size, likewise
	closed   bool
	done     chan struct{} // closed by close
}

// newSocket returns a socket with udp attached.
func newSocket(udp net.PacketConn) *socket {
	s := &socket{
		born:     time.Now(),
		attached: make(chan struct{}),
		wake:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	s.attach(udp)
	return s
}

// attach makes udp the socket's UDP socket. The socket must be detached.
// It returns false, and closes udp, if the socket is closed.
func (s *socket) attach(udp net.PacketConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		udp.Close()
		return false
	}
	s.udp, s.local = udp, udp.LocalAddr()
	if !s.deadline.IsZero() {
		udp.SetReadDeadline(s.deadline)
	}
	if b, ok := udp.(interface{ SetReadBuffer(int) error }); ok && s.rbuf > 0 {
		b.SetReadBuffer(s.rbuf)
	}
	if b, ok := udp.(interface{ SetWriteBuffer(int) error }); ok && s.wbuf > 0 {
		b.SetWriteBuffer(s.wbuf)
	}
	close(s.attached)
	return true
}

// detach closes the UDP socket, if one is attached. Reads block and writes
// are dropped until the next attach.
func (s *socket) detach() {
	s.mu.Lock()
	udp := s.udp
	if udp != nil {
		s.udp = nil
		s.attached = make(chan struct{})
	}
	s.mu.Unlock()
	if udp != nil {
		udp.Close()
	}
}

// isAttached reports whether a UDP socket is attached.
func (s *socket) isAttached() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.udp != nil
}

// sinceRead returns how long ago the socket last received a datagram.
func (s *socket) sinceRead() time.Duration {
	return time.Since(s.born) - time.Duration(s.lastRead.Load())
}

// ReadFrom implements net.PacketConn.
func (s *socket) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		s.mu.Lock()
		udp, attached, wake, done := s.udp, s.attached, s.wake, s.done
		s.mu.Unlock()
		if udp != nil {
			n, addr, err := udp.ReadFrom(b)
			if err == nil {
				s.lastRead.Store(int64(time.Since(s.born)))
				return n, addr, nil
			}
			s.mu.Lock()
			current := s.udp == udp
			s.mu.Unlock()
			if current {
				return n, addr, err // a deadline (temporary) or a real failure
			}
			continue // detached meanwhile: wait for the next socket
		}
		select {
		case <-attached:
		case <-wake:
			return 0, nil, errDeadline{}
		case <-done:
			return 0, nil, net.ErrClosed
		}
	}
}

// WriteTo implements net.PacketConn. A datagram that cannot be sent is
// dropped, as a network would: quic-go closes the connection on a write
// error, but a phone's network comes and goes, and QUIC retransmits what is
// lost; the idle timeout ends a connection whose network is really gone.
func (s *socket) WriteTo(b []byte, addr net.Addr) (int, error) {
	s.mu.Lock()
	udp := s.udp
	s.mu.Unlock()
	if udp != nil {
		udp.WriteTo(b, addr)
	}
	return len(b), nil
}

// Close implements net.PacketConn. quic-go never calls it for a Transport
// it did not create; the client calls close.
func (s *socket) Close() error {
	s.close()
	return nil
}

// close closes the UDP socket and makes every read return net.ErrClosed.
func (s *socket) close() {
	s.mu.Lock()
	udp := s.udp
	s.udp = nil
	if !s.closed {
		s.closed = true
		close(s.done)
	}
	s.mu.Unlock()
	if udp != nil {
		udp.Close()
	}
}

// LocalAddr implements net.PacketConn: the address of the socket attached
// last.
func (s *socket) LocalAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.local
}

// SetDeadline implements net.PacketConn; only the read deadline is kept.
func (s *socket) SetDeadline(t time.Time) error { return s.SetReadDeadline(t) }

// SetReadDeadline implements net.PacketConn. While detached, any non-zero
// deadline wakes the blocked reads at once (quic-go only ever sets "now",
// to stop its read loop).
func (s *socket) SetReadDeadline(t time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deadline = t
	if s.udp != nil {
		s.udp.SetReadDeadline(t)
	}
	select {
	case <-s.wake:
		if t.IsZero() {
			s.wake = make(chan struct{})
		}
	default:
		if !t.IsZero() {
			close(s.wake)
		}
	}
	return nil
}

// SetWriteDeadline implements net.PacketConn; writes never block for long
// on UDP, so it does nothing.
func (s *socket) SetWriteDeadline(time.Time) error { return nil }

// SetReadBuffer lets quic-go size the receive buffer of the UDP socket,
// and of every socket attached later.
func (s *socket) SetReadBuffer(n int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rbuf = n
	if b, ok := s.udp.(interface{ SetReadBuffer(int) error }); ok {
		return b.SetReadBuffer(n)
	}
	return nil
}

// SetWriteBuffer lets quic-go size the send buffer of the UDP socket, and
// of every socket attached later.
func (s *socket) SetWriteBuffer(n int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.wbuf = n
	if b, ok := s.udp.(interface{ SetWriteBuffer(int) error }); ok {
		return b.SetWriteBuffer(n)
	}
	return nil
}

// errDeadline is returned by ReadFrom on a detached socket once a read
// deadline is set. quic-go's read loop treats it as temporary: it stops if
// its Transport is closed and reads again otherwise.
type errDeadline struct{}

func (errDeadline) Error() string   { return "qim: socket read deadline" }
func (errDeadline) Timeout() bool   { return true }
func (errDeadline) Temporary() bool { return true }

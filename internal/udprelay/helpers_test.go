package udprelay

import (
	"bytes"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// waitTime bounds every wait in these tests. It is generous: the tests run
// with -race on busy machines, and no test waits this long when it passes.
const waitTime = 10 * time.Second

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// udpServer is a UDP server on 127.0.0.1:0 that records every datagram it
// receives and, if it echoes, sends each one back to its sender.
type udpServer struct {
	conn *net.UDPConn
	echo bool

	mu   sync.Mutex // guards the fields below
	got  [][]byte
	from []netip.AddrPort
}

// startServer starts a udpServer that stops when the test ends.
func startServer(t testing.TB, echo bool) *udpServer {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tuneBuffers(conn)
	s := &udpServer{conn: conn, echo: echo}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, readBufSize)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.got = append(s.got, bytes.Clone(buf[:n]))
			s.from = append(s.from, from)
			s.mu.Unlock()
			if echo {
				conn.WriteToUDPAddrPort(buf[:n], from)
			}
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	return s
}

// addr returns the server's address.
func (s *udpServer) addr() string {
	return s.conn.LocalAddr().String()
}

// count returns how many datagrams the server has received.
func (s *udpServer) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got)
}

// received returns copies of the datagrams received so far, in order.
func (s *udpServer) received() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.got...)
}

// lastFrom returns the source address of the latest datagram.
func (s *udpServer) lastFrom() netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.from) == 0 {
		return netip.AddrPort{}
	}
	return s.from[len(s.from)-1]
}

// startRelay starts a relay that is closed when the test ends.
func startRelay(t testing.TB, cfg Config) *Relay {
	t.Helper()
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("close relay: %v", err)
		}
	})
	return r
}

// dial returns a UDP socket connected to addr, closed when the test ends.
func dial(t testing.TB, addr string) *net.UDPConn {
	t.Helper()
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp", nil, ua)
	if err != nil {
		t.Fatal(err)
	}
	tuneBuffers(c)
	t.Cleanup(func() { c.Close() })
	return c
}

// ping sends msg on c and returns the first reply and the round-trip time.
func ping(t *testing.T, c *net.UDPConn, msg string) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("send %q: %v", msg, err)
	}
	c.SetReadDeadline(time.Now().Add(waitTime))
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("read reply to %q: %v", msg, err)
	}
	return string(buf[:n]), time.Since(start)
}

// expectSilence fails if c receives anything within d. Only used to check
// that something does not arrive, where a short sleep cannot be avoided.
func expectSilence(t *testing.T, c *net.UDPConn, d time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 2048)
	if n, err := c.Read(buf); err == nil {
		t.Fatalf("received %q, want nothing", buf[:n])
	}
}

// sendPaced sends n datagrams made by payload through the relay r, waiting
// every few datagrams until r has read them, so that no socket buffer
// overflows and every loss is the relay's doing.
func sendPaced(t *testing.T, c *net.UDPConn, r *Relay, n int, payload func(i int) []byte) {
	t.Helper()
	const chunk = 50
	base := r.Stats().ClientToServer.Received
	for i := 0; i < n; i++ {
		if _, err := c.Write(payload(i)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		if (i+1)%chunk == 0 || i == n-1 {
			want := base + uint64(i+1)
			eventually(t, "relay to read the datagrams", func() bool {
				return r.Stats().ClientToServer.Received >= want
			})
		}
	}
}

// eventually polls cond until it holds, failing the test after waitTime.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTime)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

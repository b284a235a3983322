package udprelay

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestNewRejectsBadConfig(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no target", Config{}, "no Target"},
		{"non-loopback target", Config{Target: "10.0.0.1:4433"}, "not a loopback"},
		{"target port 0", Config{Target: "127.0.0.1:0"}, "port 0"},
		{"wildcard listen", Config{Target: "127.0.0.1:4433", Listen: ":0"}, "not a loopback"},
		{"unspecified listen", Config{Target: "127.0.0.1:4433", Listen: "0.0.0.0:0"}, "not a loopback"},
		{"loss above 1", Config{Target: "127.0.0.1:4433", Loss: 1.5}, "Loss"},
		{"negative duplicate", Config{Target: "127.0.0.1:4433", Duplicate: -0.1}, "Duplicate"},
		{"handshake loss below -1", Config{Target: "127.0.0.1:4433", HandshakeLoss: -2}, "HandshakeLoss"},
		{"negative delay", Config{Target: "127.0.0.1:4433", Delay: -time.Second}, "negative"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, err := New(tt.cfg)
			if err == nil {
				r.Close()
				t.Fatal("New succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "udprelay: ") {
				t.Fatalf("error %q, want one mentioning %q", err, tt.want)
			}
		})
	}
}

func TestForwardsBothWays(t *testing.T) {
	srv := startServer(t, true)
	r := startRelay(t, Config{Target: srv.addr()})
	c := dial(t, r.Addr())
	for i := range 10 {
		msg := fmt.Sprintf("hello %d", i)
		if got, _ := ping(t, c, msg); got != msg {
			t.Fatalf("reply %q, want %q", got, msg)
		}
	}
	if from := srv.lastFrom(); from.String() == c.LocalAddr().String() {
		t.Errorf("server saw the client's own address %v, want the relay's", from)
	}
	// The relay counts a datagram forwarded just after sending it, so the
	// last reply can reach the client a moment before it is counted.
	st := r.Stats()
	for deadline := time.Now().Add(time.Second); (st.ServerToClient.Forwarded < 10 || st.ClientToServer.Forwarded < 10) && time.Now().Before(deadline); st = r.Stats() {
		time.Sleep(time.Millisecond)
	}
	for _, d := range []DirectionStats{st.ClientToServer, st.ServerToClient} {
		if d.Received != 10 || d.Forwarded != 10 || d.Dropped != 0 {
			t.Errorf("stats %+v, want 10 received and forwarded", d)
		}
	}
	if st.Flows != 1 {
		t.Errorf("%d flows, want 1", st.Flows)
	}
}

func TestDelayAddsToRoundTrip(t *testing.T) {
	const delay = 20 * time.Millisecond
	srv := startServer(t, true)
	r := startRelay(t, Config{Target: srv.addr(), Delay: delay})
	c := dial(t, r.Addr())
	for i := range 5 {
		msg := fmt.Sprintf("ping %d", i)
		got, rtt := ping(t, c, msg)
		if got != msg {
			t.Fatalf("reply %q, want %q", got, msg)
		}
		if rtt < 2*delay {
			t.Errorf("round trip %v, want at least %v", rtt, 2*delay)
		}
	}
}

func TestJitter(t *testing.T) {
	for _, tt := range []struct {
		name      string
		noReorder bool
	}{
		{"reorders", false},
		{"NoReorder keeps order", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			const n = 200
			srv := startServer(t, false)
			r := startRelay(t, Config{Target: srv.addr(), Jitter: 20 * time.Millisecond, NoReorder: tt.noReorder, Seed: 1})
			c := dial(t, r.Addr())
			sendPaced(t, c, r, n, seqPayload)
			eventually(t, "all datagrams", func() bool { return srv.count() == n })
			i := firstOutOfOrder(srv.received())
			switch {
			case tt.noReorder && i >= 0:
				t.Fatalf("datagram %d arrived out of order", i)
			case !tt.noReorder && i < 0:
				t.Fatal("every datagram arrived in order, want jitter to reorder some")
			}
		})
	}
}

func TestLoss(t *testing.T) {
	for _, tt := range []struct {
		name     string
		loss     float64
		n        int
		min, max float64 // bounds on the fraction dropped
	}{
		{"none", 0, 500, 0, 0},
		{"half", 0.5, 2000, 0.35, 0.65},
		{"all", 1, 500, 1, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t, false)
			r := startRelay(t, Config{Target: srv.addr(), Loss: tt.loss})
			c := dial(t, r.Addr())
			sendPaced(t, c, r, tt.n, seqPayload)
			st := r.Stats().ClientToServer
			eventually(t, "the relay to forward what it kept", func() bool {
				st = r.Stats().ClientToServer
				return st.Forwarded+st.Dropped == uint64(tt.n)
			})
			eventually(t, "the server to receive what the relay forwarded", func() bool {
				return srv.count() == int(st.Forwarded)
			})
			frac := float64(st.Dropped) / float64(tt.n)
			if frac < tt.min || frac > tt.max {
				t.Errorf("dropped %d of %d (%.2f), want a fraction in [%v, %v]", st.Dropped, tt.n, frac, tt.min, tt.max)
			}
		})
	}
}

func TestHandshakeLoss(t *testing.T) {
	for _, tt := range []struct {
		name          string
		loss, hsLoss  float64
		wantLongDrops bool // long-header datagrams dropped
		wantDrops     bool // short-header datagrams dropped
	}{
		{"handshake only", 0, 1, true, false},
		{"loss covers handshake by default", 1, 0, true, true},
		{"handshake exempt", 1, -1, false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t, false)
			r := startRelay(t, Config{Target: srv.addr(), Loss: tt.loss, HandshakeLoss: tt.hsLoss})
			c := dial(t, r.Addr())
			sendPaced(t, c, r, 1, func(int) []byte { return []byte{0xc0, 'L'} })
			sendPaced(t, c, r, 1, func(int) []byte { return []byte{0x40, 'S'} })
			wantDropped, wantGot := 0, ""
			for _, d := range []struct {
				dropped bool
				tag     string
			}{{tt.wantLongDrops, "L"}, {tt.wantDrops, "S"}} {
				if d.dropped {
					wantDropped++
				} else {
					wantGot += d.tag
				}
			}
			eventually(t, "the relay to dispose of both datagrams", func() bool {
				st := r.Stats().ClientToServer
				return st.Forwarded+st.Dropped == 2
			})
			eventually(t, "the server to receive the forwarded datagrams", func() bool {
				return srv.count() == 2-wantDropped
			})
			got := ""
			for _, p := range srv.received() {
				got += string(p[1:])
			}
			if got != wantGot {
				t.Errorf("server received %q, want %q", got, wantGot)
			}
		})
	}
}

func TestDuplicate(t *testing.T) {
	const n = 20
	srv := startServer(t, false)
	r := startRelay(t, Config{Target: srv.addr(), Duplicate: 1})
	c := dial(t, r.Addr())
	sendPaced(t, c, r, n, seqPayload)
	eventually(t, "every datagram twice", func() bool { return srv.count() == 2*n })
	seen := make(map[uint32]int)
	for _, p := range srv.received() {
		seen[binary.BigEndian.Uint32(p)]++
	}
	for i := range uint32(n) {
		if seen[i] != 2 {
			t.Errorf("datagram %d arrived %d times, want 2", i, seen[i])
		}
	}
	if st := r.Stats().ClientToServer; st.Duplicated != n || st.Forwarded != 2*n {
		t.Errorf("stats %+v, want %d duplicated and %d forwarded", st, n, 2*n)
	}
}

func TestReorder(t *testing.T) {
	const n = 200
	srv := startServer(t, false)
	r := startRelay(t, Config{Target: srv.addr(), Reorder: 0.5, Seed: 7})
	c := dial(t, r.Addr())
	sendPaced(t, c, r, n, seqPayload)
	eventually(t, "all datagrams", func() bool { return srv.count() == n })
	got := srv.received()
	if firstOutOfOrder(got) < 0 {
		t.Fatal("every datagram arrived in order, want some reordered")
	}
	seen := make(map[uint32]bool)
	for _, p := range got {
		seen[binary.BigEndian.Uint32(p)] = true
	}
	if len(seen) != n {
		t.Errorf("%d distinct datagrams arrived, want %d", len(seen), n)
	}
	if st := r.Stats().ClientToServer; st.Reordered == 0 {
		t.Errorf("stats %+v, want some reordered", st)
	}
}

func TestRebind(t *testing.T) {
	srv := startServer(t, true)
	r := startRelay(t, Config{Target: srv.addr()})
	c := dial(t, r.Addr())
	if got, _ := ping(t, c, "before"); got != "before" {
		t.Fatalf("reply %q, want %q", got, "before")
	}
	before := srv.lastFrom()

	if err := r.Rebind(); err != nil {
		t.Fatal(err)
	}
	if got, _ := ping(t, c, "after"); got != "after" {
		t.Fatalf("reply %q, want %q", got, "after")
	}
	after := srv.lastFrom()
	if after == before {
		t.Fatalf("server saw %v after Rebind, want a new address", after)
	}
	if st := r.Stats(); st.Flows != 1 {
		t.Errorf("%d flows, want 1", st.Flows)
	}

	// The old port is gone: what the server sends there is lost.
	if _, err := srv.conn.WriteToUDPAddrPort([]byte("stale"), before); err != nil {
		t.Fatal(err)
	}
	expectSilence(t, c, 100*time.Millisecond)
}

func TestBlackhole(t *testing.T) {
	srv := startServer(t, true)
	r := startRelay(t, Config{Target: srv.addr()})
	c := dial(t, r.Addr())
	if got, _ := ping(t, c, "up"); got != "up" {
		t.Fatalf("reply %q, want %q", got, "up")
	}

	r.Blackhole(true)
	sendPaced(t, c, r, 10, seqPayload)
	eventually(t, "the relay to drop the datagrams", func() bool {
		return r.Stats().ClientToServer.Dropped == 10
	})
	if n := srv.count(); n != 1 {
		t.Fatalf("server received %d datagrams, want only the first", n)
	}
	// Replies the server sends during the outage are dropped too.
	if _, err := srv.conn.WriteToUDPAddrPort([]byte("lost"), srv.lastFrom()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the relay to drop the reply", func() bool {
		return r.Stats().ServerToClient.Dropped == 1
	})
	expectSilence(t, c, 50*time.Millisecond)

	r.Blackhole(false)
	if got, _ := ping(t, c, "back"); got != "back" {
		t.Fatalf("reply %q, want %q", got, "back")
	}
}

func TestSetConfigCutsAndRestoresLink(t *testing.T) {
	srv := startServer(t, true)
	r := startRelay(t, Config{Target: srv.addr()})
	c := dial(t, r.Addr())

	r.SetConfig(func(c *Config) {
		c.Loss = 1
		c.Target = "127.0.0.1:1" // ignored
	})
	if got := r.Config(); got.Loss != 1 || got.Target != srv.addr() {
		t.Fatalf("config %+v, want Loss 1 and the original Target", got)
	}
	sendPaced(t, c, r, 5, seqPayload)
	eventually(t, "the relay to drop the datagrams", func() bool {
		return r.Stats().ClientToServer.Dropped == 5
	})
	if n := srv.count(); n != 0 {
		t.Fatalf("server received %d datagrams, want none", n)
	}

	r.SetConfig(func(c *Config) { c.Loss = 7 }) // clamped to 1
	if got := r.Config().Loss; got != 1 {
		t.Fatalf("Loss %v, want it clamped to 1", got)
	}
	r.SetConfig(func(c *Config) { c.Loss = 0 })
	if got, _ := ping(t, c, "back"); got != "back" {
		t.Fatalf("reply %q, want %q", got, "back")
	}
}

func TestMaxQueue(t *testing.T) {
	srv := startServer(t, false)
	r := startRelay(t, Config{Target: srv.addr(), Delay: time.Hour, MaxQueue: 10})
	c := dial(t, r.Addr())
	sendPaced(t, c, r, 30, seqPayload)
	if st := r.Stats().ClientToServer; st.QueueFull != 20 {
		t.Fatalf("stats %+v, want 20 dropped for a full queue", st)
	}
	// The test's cleanup closes the relay with ten datagrams waiting an
	// hour: Close must not wait for them.
}

func TestIdleFlowsAreRemoved(t *testing.T) {
	srv := startServer(t, true)
	r, err := newRelay(Config{Target: srv.addr()}, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c := dial(t, r.Addr())
	if got, _ := ping(t, c, "one"); got != "one" {
		t.Fatalf("reply %q, want %q", got, "one")
	}
	eventually(t, "the idle flow to be removed", func() bool { return r.Stats().Flows == 0 })
	if got, _ := ping(t, c, "two"); got != "two" {
		t.Fatalf("reply %q, want %q", got, "two")
	}
}

func TestClosedRelay(t *testing.T) {
	srv := startServer(t, true)
	r, err := New(Config{Target: srv.addr()})
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, r.Addr())
	if got, _ := ping(t, c, "hi"); got != "hi" {
		t.Fatalf("reply %q, want %q", got, "hi")
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := r.Rebind(); err != ErrClosed {
		t.Fatalf("Rebind after Close: %v, want ErrClosed", err)
	}
}

// seqPayload returns a datagram carrying i.
func seqPayload(i int) []byte {
	return binary.BigEndian.AppendUint32(nil, uint32(i))
}

// firstOutOfOrder returns the index of the first datagram whose seqPayload
// number is below that of one received before it, or -1.
func firstOutOfOrder(got [][]byte) int {
	var highest uint32
	for i, p := range got {
		v := binary.BigEndian.Uint32(p)
		if i > 0 && v < highest {
			return i
		}
		highest = max(highest, v)
	}
	return -1
}

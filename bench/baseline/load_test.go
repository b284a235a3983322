package baseline

import (
	"net"
	"sync"
	"testing"
	"time"
)

func TestEcho(t *testing.T) {
	ts := startServer(t, nil)
	opts := EchoOptions{Conns: 3, Window: 8, Size: 100, Duration: 200 * time.Millisecond, Warmup: 50 * time.Millisecond}
	res, err := Echo(testContext(t), ts.addr, ts.clientTLS, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Msgs == 0 || res.Elapsed != opts.Duration {
		t.Fatalf("result %+v: no echo measured", res)
	}
	if res.P50 <= 0 || res.P50 > res.P99 || res.P99 > res.P999 {
		t.Fatalf("latencies p50 %v p99 %v p999 %v", res.P50, res.P99, res.P999)
	}
	if got := ts.Stats().Accepted; got != 3 {
		t.Fatalf("server accepted %d connections, want 3", got)
	}
}

func TestFanoutDeliversEveryMessageOnce(t *testing.T) {
	ts := startServer(t, nil)
	for _, tt := range []struct {
		name string
		opts FanoutOptions
	}{
		{"one subscriber", FanoutOptions{Subscribers: 1, Messages: 100, Window: 1}},
		{"no window", FanoutOptions{Subscribers: 20, Messages: 3 * queueLen}},
		{"window of 4", FanoutOptions{Subscribers: 20, Messages: 50, Window: 4}},
		{"window wider than the queues", FanoutOptions{Subscribers: 10, Messages: 400, Window: 2 * queueLen, Size: 300}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Fanout(testContext(t), ts.addr, ts.clientTLS, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if want := int64(tt.opts.Subscribers * tt.opts.Messages); res.Deliveries != want {
				t.Fatalf("%d deliveries, want %d", res.Deliveries, want)
			}
			if res.Elapsed <= 0 || res.P99 <= 0 || res.P99 > res.Elapsed {
				t.Fatalf("result %+v", res)
			}
			eventually(t, "the subscribers to leave", func() bool { return ts.Stats().Subscribers == 0 })
		})
	}
}

// Two loads at once use channels of their own: a subscriber that received
// the other's messages would see an unexpected sequence number.
func TestFanoutChannelsDoNotMeet(t *testing.T) {
	ts := startServer(t, nil)
	ctx := testContext(t)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			res, err := Fanout(ctx, ts.addr, ts.clientTLS, FanoutOptions{Subscribers: 5, Messages: 100})
			if err != nil {
				t.Error(err)
			} else if res.Deliveries != 500 {
				t.Errorf("%d deliveries, want 500", res.Deliveries)
			}
		})
	}
	wg.Wait()
}

func TestHandshakes(t *testing.T) {
	ts := startServer(t, nil)
	res, err := Handshakes(testContext(t), ts.addr, ts.clientTLS, HandshakeOptions{Concurrency: 4, Duration: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Count == 0 || res.Rate() <= 0 {
		t.Fatalf("result %+v", res)
	}
	s := ts.Stats()
	if s.Accepted != uint64(res.Count) || s.Hellos != uint64(res.Count) {
		t.Fatalf("%d handshakes counted, but the server accepted %d connections and answered %d hellos", res.Count, s.Accepted, s.Hellos)
	}
	eventually(t, "the server to see the connections closed", func() bool { return ts.Stats().Open == 0 })
}

func TestMigrate(t *testing.T) {
	const localA, localB = "127.0.0.2", "127.0.0.3"
	for _, ip := range []string{localA, localB} {
		pc, err := net.ListenPacket("udp", ip+":0")
		if err != nil {
			t.Skipf("cannot bind %s: %v", ip, err)
		}
		pc.Close()
	}
	var seen remoteIPs
	ts := startServer(t, func(s *Server) { s.echoed = seen.add })
	const n = 10
	res, err := Migrate(testContext(t), ts.addr, ts.clientTLS, n, localA, localB)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Switches) != n || len(res.AfterSwitch) != n {
		t.Fatalf("result %+v, want %d switches", res, n)
	}
	for i := range n {
		if res.AfterSwitch[i] <= 0 || res.AfterSwitch[i] > res.Switches[i] {
			t.Fatalf("switch %d: %v from AddPath, %v from Switch", i, res.Switches[i], res.AfterSwitch[i])
		}
	}
	if res.Median <= 0 || res.MedianAfterSwitch <= 0 {
		t.Fatalf("medians %v, %v", res.Median, res.MedianAfterSwitch)
	}
	// The server echoed the first frame from A, and the first frame after
	// each switch from the new address: it had moved to the new path. But
	// quic-go applies Switch on its run loop's next iteration, so a frame
	// written at once may still leave on the previous path when the loop was
	// mid-iteration (about 1 switch in 50 under the race detector); it is
	// sent again on the new one. A server that never moved would show n/2
	// such switches; fewer are tolerated.
	got := seen.get()
	if len(got) != n+1 || got[0] != localA {
		t.Fatalf("server echoed frames from %v, want %d from %s first", got, n+1, localA)
	}
	late := 0
	for i := 1; i <= n; i++ {
		to, from := localB, localA
		if i%2 == 0 {
			to, from = from, to
		}
		switch got[i] {
		case to:
		case from:
			late++
		default:
			t.Fatalf("server echoed frames from %v", got)
		}
	}
	if late >= n/2 {
		t.Fatalf("server echoed frames from %v: it did not move to the new path", got)
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, tt := range []struct {
		q    float64
		want time.Duration
	}{
		{0.5, 500 * time.Microsecond},
		{0.99, 990 * time.Microsecond},
		{0.999, 999 * time.Microsecond},
	} {
		got := h.quantile(tt.q)
		if diff := got - tt.want; diff < -tt.want/64 || diff > tt.want/64 {
			t.Errorf("quantile(%v) = %v, want %v within 1/64", tt.q, got, tt.want)
		}
	}
	for v := range uint64(1 << 16) {
		lo, width := bucketRange(bucketOf(v))
		if v < lo || v >= lo+width {
			t.Fatalf("%d is in bucket %d, [%d, %d)", v, bucketOf(v), lo, lo+width)
		}
	}
}

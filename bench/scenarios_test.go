package bench_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/qim-im/qim/bench"
	"github.com/qim-im/qim/daemon"
	"github.com/qim-im/qim/internal/pgtest"
	"github.com/qim-im/qim/internal/testserver"
)

// startEnv starts a real server, unthrottled as a benchmark's server is,
// and returns the bench environment aimed at it.
func startEnv(t *testing.T) (*bench.Env, *testserver.Server) {
	t.Helper()
	srv := testserver.Start(t, testserver.Options{SendRate: -1, HandshakeRate: 1e6})
	secret, err := daemon.AppSecret(srv.DataDir, daemon.DemoOrg, daemon.DemoAppkey)
	if err != nil {
		t.Fatal(err)
	}
	return &bench.Env{
		Addr:   srv.Addr,
		TLS:    srv.ClientTLS(),
		Org:    daemon.DemoOrg,
		Appkey: daemon.DemoAppkey,
		Secret: secret,
		Prefix: "t",
	}, srv
}

func TestPair(t *testing.T) {
	e, _ := startEnv(t)
	for _, offline := range []bool{false, true} {
		r, err := bench.Pair(context.Background(), e, bench.PairOptions{
			// A smoke test: a second measured, so that one slow fsync of a
			// machine busy with other test packages cannot leave it empty.
			Pairs: 4, Window: 4, Offline: offline, Warmup: 200 * time.Millisecond, Duration: time.Second,
		})
		if err != nil {
			t.Fatalf("offline=%v: %v", offline, err)
		}
		t.Logf("offline=%v: %.0f msgs/s, p50 %v p99 %v, %d errors", offline, r.Rate(), r.Latency.P50, r.Latency.P99, r.Errors)
		if r.Errors != 0 || r.Delivered == 0 || r.Latency.N == 0 || r.Latency.P50 <= 0 {
			t.Errorf("offline=%v: %+v", offline, r)
		}
	}
}

func TestPairRate(t *testing.T) {
	e, _ := startEnv(t)
	r, err := bench.Pair(context.Background(), e, bench.PairOptions{
		Pairs: 2, Window: 4, Rate: 200, Warmup: 100 * time.Millisecond, Duration: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	// 200/s for 1 s: the open-loop rate holds the pace, give or take the
	// limiter's first token and the window's edges.
	if r.Delivered < 150 || r.Delivered > 260 {
		t.Errorf("delivered %d at 200 msgs/s for 1s", r.Delivered)
	}
}

func TestFanout(t *testing.T) {
	e, _ := startEnv(t)
	rs, err := bench.Fanout(context.Background(), e, bench.FanoutOptions{Members: []int{5, 20}, Messages: 30})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 {
		t.Fatalf("%d results", len(rs))
	}
	for _, r := range rs {
		t.Logf("fanout-%d: %.0f deliveries/s, last recipient p99 %v", r.Members, r.Rate(), r.LastRecipient.P99)
		if want := int64(30 * (r.Members - 1)); r.Deliveries != want {
			t.Errorf("fanout-%d: %d deliveries, want %d", r.Members, r.Deliveries, want)
		}
		if r.LastRecipient.N != 30 || r.Elapsed <= 0 {
			t.Errorf("fanout-%d: %+v", r.Members, r)
		}
	}
}

func TestReceipts(t *testing.T) {
	e, _ := startEnv(t)
	r, err := bench.Receipts(context.Background(), e, bench.ReceiptsOptions{Pairs: 3, Window: 4, Messages: 40})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("receipts: %.0f/s, %d events, p99 %v", r.Rate(), r.Events, r.Latency.P99)
	if r.Receipts != 3*40 || r.Events == 0 || r.Events > r.Receipts || r.Elapsed <= 0 {
		t.Errorf("%+v", r)
	}
	// Every READ's latency is known but for one whose request time was
	// stored after a later READ of its reader was answered: rare.
	if r.Latency.N < 3*40*9/10 || r.Latency.P50 <= 0 {
		t.Errorf("latency %+v", r.Latency)
	}
}

// TestPresenceFanout runs presence-fanout against a server with the
// default coalescing window (1 s): each change reaches the watchers a
// window after it is made.
func TestPresenceFanout(t *testing.T) {
	e, _ := startEnv(t)
	r, err := bench.PresenceFanout(context.Background(), e, bench.PresenceOptions{Watchers: 6, Changes: 2, Gap: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("presence: %.0f deliveries/s, spread p50 %v; message: %.0f deliveries/s, spread p50 %v",
		r.Presence.Rate(), r.Presence.Spread.P50, r.Message.Rate(), r.Message.Spread.P50)
	for _, s := range []bench.Spread{r.Presence, r.Message} {
		if s.Deliveries != 2*6 || s.Spread.N != 2 || s.First.N != 2 || s.First.P50 <= 0 || s.Rate() <= 0 {
			t.Errorf("%+v", s)
		}
	}
	if r.Presence.First.P50 < 900*time.Millisecond {
		t.Errorf("changes reached their first watcher %v after the request, within the server's 1 s window", r.Presence.First.P50)
	}
}

// TestAcross runs PairAcross and FanoutAcross on a cluster of three nodes
// and checks that they put each device on the node they say: pair i's
// sender on node i, its receiver on node i+1; group member k on node k.
func TestAcross(t *testing.T) {
	c := testserver.StartCluster(t, 3, testserver.Options{Postgres: pgtest.Database(t), SendRate: -1, HandshakeRate: 1e6})
	var nodes []*bench.Env
	for _, srv := range c.Nodes {
		secret, err := daemon.AppSecret(srv.DataDir, daemon.DemoOrg, daemon.DemoAppkey)
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, &bench.Env{Addr: srv.Addr, TLS: srv.ClientTLS(), Org: daemon.DemoOrg,
			Appkey: daemon.DemoAppkey, Secret: secret, Prefix: "t"})
	}
	// connects returns how many sessions each node has opened so far.
	connects := func() []uint64 {
		var n []uint64
		for _, srv := range c.Nodes {
			n = append(n, srv.Connects())
		}
		return n
	}
	sub := func(a, b []uint64) []uint64 {
		d := make([]uint64, len(a))
		for i := range a {
			d[i] = a[i] - b[i]
		}
		return d
	}

	before := connects()
	r, err := bench.PairAcross(context.Background(), nodes, bench.PairOptions{
		Pairs: 3, Window: 4, Offline: true, Warmup: 200 * time.Millisecond, Duration: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pair across 3 nodes: %.0f msgs/s, p99 %v", r.Rate(), r.Latency.P99)
	if r.Errors != 0 || r.Delivered == 0 {
		t.Errorf("pair: %+v", r)
	}
	// Each node: one pair's sender and the previous pair's receiver.
	if got := sub(connects(), before); !slices.Equal(got, []uint64{2, 2, 2}) {
		t.Errorf("pair: sessions opened per node %v, want [2 2 2]", got)
	}

	before = connects()
	rs, err := bench.FanoutAcross(context.Background(), nodes, bench.FanoutOptions{Members: []int{7}, Messages: 20})
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(20 * 6); len(rs) != 1 || rs[0].Deliveries != want {
		t.Fatalf("fanout: %+v, want %d deliveries", rs, want)
	}
	t.Logf("fanout-7 across 3 nodes: %.0f deliveries/s", rs[0].Rate())
	// Members 0 (the sender), 3 and 6; 1 and 4; 2 and 5.
	if got := sub(connects(), before); !slices.Equal(got, []uint64{3, 2, 2}) {
		t.Errorf("fanout: sessions opened per node %v, want [3 2 2]", got)
	}
}

func TestConnect(t *testing.T) {
	e, srv := startEnv(t)
	before := srv.Connects()
	r, err := bench.Connect(context.Background(), e, bench.ConnectOptions{Concurrency: 4, Duration: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%.0f connects/s, p50 %v, %d errors", r.Rate(), r.Latency.P50, r.Errors)
	if got := srv.Connects() - before; got < uint64(r.Connects) {
		t.Errorf("server saw %d sessions, bench counted %d connects", got, r.Connects)
	}
	if r.Errors != 0 {
		t.Errorf("%d errors, first %v", r.Errors, r.FirstErr)
	}
}

func TestStoreBaseline(t *testing.T) {
	r, err := bench.StoreBaseline(context.Background(), bench.StoreOptions{Dir: t.TempDir(), Writers: 8, Duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if r.Commits == 0 {
		t.Fatal("no commit")
	}
	t.Logf("%.0f synced commits/s", r.Rate())
}

func TestLine(t *testing.T) {
	l := bench.Line{Scenario: "pair-ephemeral", Value: 123456.7, Unit: "msgs/s", Baseline: 400000}
	if got, want := l.String(), "scenario=pair-ephemeral value=123457 unit=msgs/s baseline=400000 ratio=0.309"; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

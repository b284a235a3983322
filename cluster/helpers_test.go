package cluster

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testLogger logs warnings and errors to the test's output when
// QIM_TEST_LOG is set, and nothing otherwise.
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("QIM_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// startCluster starts n clustered NATS servers on loopback, stopped when
// the test ends.
func startCluster(t testing.TB, n int) []*Server {
	t.Helper()
	servers, err := StartLocalCluster(n, testLogger(t), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, s := range servers {
			s.Shutdown()
		}
	})
	return servers
}

// openRouter starts a router, closed when the test ends (before the
// servers started earlier stop).
func openRouter(t testing.TB, cfg RouterConfig) *NATSRouter {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	r, err := NewNATSRouter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	})
	return r
}

// eventually waits up to 10 s for cond, polling every millisecond.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("within 10 s: %s", what)
		}
	}
}

// openNodes opens a router on each of servers, and waits until each knows
// every other (Peers), so that each hears what the others publish.
func openNodes(t testing.TB, servers []*Server, cfg RouterConfig) []*NATSRouter {
	t.Helper()
	var rs []*NATSRouter
	for i, s := range servers {
		c := cfg
		c.URL = s.ClientURL()
		c.Name = fmt.Sprintf("node%d", i)
		rs = append(rs, openRouter(t, c))
	}
	waitPeers(t, rs...)
	return rs
}

// waitPeers waits until each of rs has the others as peers.
func waitPeers(t testing.TB, rs ...*NATSRouter) {
	t.Helper()
	for _, r := range rs {
		eventually(t, r.Node()+" knows every other node", func() bool { return len(r.Peers()) == len(rs)-1 })
	}
}

package clustertest

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/cluster"
	"github.com/qim-im/qim/internal/testserver"
)

// TestClusterNATSMemberStops runs the nodes on a NATS cluster of their
// own (three servers, node i connected to server i) and stops server 1,
// bob's node's, while alice, on node 0, writes to bob. bob's node
// reconnects to another NATS server and catches up: bob gets every
// message once, in order, within the catch-up bound, although NATS lost
// those published while his node was away.
func TestClusterNATSMemberStops(t *testing.T) {
	nats, err := cluster.StartLocalCluster(3, nil, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	urls := make([]string, len(nats))
	for i, s := range nats {
		urls[i] = s.ClientURL()
		t.Cleanup(s.Shutdown)
	}
	const catchUp = 3 * time.Second
	c := startCluster(t, 3, testserver.Options{NATSNodes: urls, CatchUpEvery: catchUp})
	alice := dial(t, c, 0, "alice", "phone")
	bob := dial(t, c, 1, "bob", "phone")
	time.Sleep(1500 * time.Millisecond) // the sessions' first catch-up pass

	const total = 200
	sent := make(chan error, 1)
	go func() {
		for k := range total {
			if _, err := alice.Send(ctxT(t), client.ToUser("bob"), client.Outgoing{Text: fmt.Sprintf("m%d", k)}); err != nil {
				sent <- fmt.Errorf("send %d: %w", k, err)
				return
			}
			if k == total/4 {
				nats[1].Shutdown()
			}
			time.Sleep(5 * time.Millisecond)
		}
		sent <- nil
	}()
	got := collect(t, bob, total, waitTime)
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	checkConv(t, "bob", got, dense(total))
	quiet(t, bob, 200*time.Millisecond)
	st := c.Nodes[1].Daemon().Router().Stats()
	t.Logf("bob's node: %+v", st)
}

// TestClusterMetrics checks that a node of a cluster exports its router's
// counters at /metrics.
func TestClusterMetrics(t *testing.T) {
	c := startCluster(t, 2, testserver.Options{Metrics: "127.0.0.1:0"})
	alice := dial(t, c, 0, "alice", "phone")
	bob := dial(t, c, 1, "bob", "phone")
	if _, err := alice.Send(ctxT(t), client.ToUser("bob"), client.Outgoing{Text: "hi"}); err != nil {
		t.Fatal(err)
	}
	collect(t, bob, 1, waitTime)
	body := scrape(t, c.Nodes[1].MetricsURL+"/metrics")
	for _, want := range []string{"qim_cluster_events_received_total 1", "qim_cluster_subscriptions 1", "qim_cluster_catchup_passes_total", "qim_cluster_missed_total"} {
		if !strings.Contains(body, want) {
			t.Errorf("node 1's metrics lack %q", want)
		}
	}
}

// scrape returns the body of url.
func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

package clustertest

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
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
// reconnects to another NATS server and is told it may have missed events;
// bob gets every message once, in order. (Whatever NATS lost in the switch
// is here also revealed by later messages; TestClusterCatchUpOnReconnect
// checks a loss that only the catch-up pass can repair.)
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
	c := startCluster(t, 3, testserver.Options{NATSNodes: urls, CatchUpEvery: time.Hour})
	alice := dial(t, c, 0, "alice", "phone")
	bob := dial(t, c, 1, "bob", "phone")
	time.Sleep(1500 * time.Millisecond) // the sessions' first catch-up pass

	const before, after = 50, 10
	for k := range before + after {
		if k == before {
			nats[1].Shutdown()
		}
		if _, err := alice.Send(ctxT(t), client.ToUser("bob"), client.Outgoing{Text: fmt.Sprintf("m%d", k)}); err != nil {
			t.Fatalf("send %d: %v", k, err)
		}
	}
	start := time.Now()
	got := collect(t, bob, before+after, waitTime)
	checkConv(t, "bob", got, dense(before+after))
	quiet(t, bob, 200*time.Millisecond)
	st := c.Nodes[1].Daemon().Router().Stats()
	t.Logf("bob had everything %v after the last send; bob's node: %+v", time.Since(start).Round(time.Millisecond), st)
	if st.Reconnects == 0 || st.MissedCalls == 0 {
		t.Errorf("bob's node did not reconnect and catch up: %+v", st)
	}
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
	// At least the message (receipts of it may follow: alice's own
	// device's cursor moves over it, and bob is told).
	if m := regexp.MustCompile(`qim_cluster_events_received_total (\d+)`).FindStringSubmatch(body); m == nil || m[1] == "0" {
		t.Errorf("node 1's metrics lack qim_cluster_events_received_total >= 1: %v", m)
	}
	for _, want := range []string{"qim_cluster_subscriptions 1", "qim_cluster_catchup_passes_total", "qim_cluster_missed_total"} {
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

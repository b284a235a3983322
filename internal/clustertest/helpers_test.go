package clustertest

import (
	"context"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/pgtest"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
)

// TestMain checks for leaked goroutines once the tests have run.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitTime bounds a single wait for the cluster.
const waitTime = 30 * time.Second

// startCluster starts n nodes on a new database, as testserver.StartCluster
// does, with opts.
func startCluster(t *testing.T, n int, opts testserver.Options) *testserver.Cluster {
	t.Helper()
	opts.Postgres = pgtest.Database(t)
	return testserver.StartCluster(t, n, opts)
}

// dial connects user's device to node i only (no other address: the
// tests choose where each device is).
func dial(t *testing.T, c *testserver.Cluster, i int, user, device string) *client.Client {
	t.Helper()
	return testserver.Dial(t, c.Nodes[i].ClientConfig(user, device))
}

// ctxT returns a context bounded by waitTime and the test.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), waitTime)
	t.Cleanup(cancel)
	return ctx
}

// collect reads n messages from c, or fails.
func collect(t *testing.T, c *client.Client, n int, timeout time.Duration) []*qimpb.Message {
	t.Helper()
	got := make([]*qimpb.Message, 0, n)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for len(got) < n {
		select {
		case m, ok := <-c.Messages():
			if !ok {
				t.Fatalf("%s/%s: session ended after %d of %d messages: %v", c.User(), c.Device(), len(got), n, c.Err())
			}
			got = append(got, m)
		case <-deadline.C:
			t.Fatalf("%s/%s: got %d of %d messages in %v", c.User(), c.Device(), len(got), n, timeout)
		}
	}
	return got
}

// quiet checks that c receives nothing more for a moment.
func quiet(t *testing.T, c *client.Client, d time.Duration) {
	t.Helper()
	select {
	case m, ok := <-c.Messages():
		if ok {
			t.Fatalf("%s/%s: unexpected message seq %d %q", c.User(), c.Device(), m.GetSeq(), client.Text(m))
		}
	case <-time.After(d):
	}
}

// checkConv checks that got, the messages of one conversation a device
// received, are want (seqs, ascending), each once, in order.
func checkConv(t *testing.T, who string, got []*qimpb.Message, want []uint64) {
	t.Helper()
	seqs := make([]uint64, len(got))
	for i, m := range got {
		seqs[i] = m.Seq
	}
	if !slices.Equal(seqs, want) {
		t.Fatalf("%s received seqs %v, want %v", who, seqs, want)
	}
}

// dense returns 1..n.
func dense(n int) []uint64 {
	out := make([]uint64, n)
	for i := range out {
		out[i] = uint64(i + 1)
	}
	return out
}

// eventually polls cond every 10 ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

package reliability_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
)

// TestMain checks for leaked goroutines once the tests have run, and
// removes the qimd binary they shared.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		qimdBin.Remove()
		os.Exit(code)
	}))
}

// waitTime bounds a single wait for the server.
const waitTime = 20 * time.Second

// soak reports whether the long variants run (QIM_SOAK=1).
func soak() bool { return os.Getenv("QIM_SOAK") == "1" }

// mib formats a byte count in MiB.
func mib(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// demoConfig returns the client Config of user's device on srv.
func demoConfig(srv *testserver.Server, user, device string) client.Config {
	return srv.ClientConfig(user, device)
}

// dial connects with cfg and closes the client when the test ends.
func dial(t testing.TB, cfg client.Config) *client.Client {
	t.Helper()
	return testserver.Dial(t, cfg)
}

// ctxT returns a context bounded by waitTime and the test.
func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), waitTime)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond every 10ms until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what func() string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// recv reads n messages from c or fails.
func recv(t testing.TB, c *client.Client, n int, timeout time.Duration) []*qimpb.Message {
	t.Helper()
	got, err := collect(c, n, timeout)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// collect reads n messages from c, or as many as arrive before the session
// ends or timeout passes, with an error then.
func collect(c *client.Client, n int, timeout time.Duration) ([]*qimpb.Message, error) {
	got := make([]*qimpb.Message, 0, n)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for len(got) < n {
		select {
		case m, ok := <-c.Messages():
			if !ok {
				return got, fmt.Errorf("%s/%s: session ended after %d of %d messages: %v", c.User(), c.Device(), len(got), n, c.Err())
			}
			got = append(got, m)
		case <-deadline.C:
			return got, fmt.Errorf("%s/%s: got %d of %d messages in %v", c.User(), c.Device(), len(got), n, timeout)
		}
	}
	return got, nil
}

// quiet checks that c receives nothing for a moment.
func quiet(t testing.TB, c *client.Client) {
	t.Helper()
	select {
	case m, ok := <-c.Messages():
		if ok {
			t.Fatalf("%s/%s: unexpected message seq %d %q", c.User(), c.Device(), m.GetSeq(), client.Text(m))
		}
	case <-time.After(300 * time.Millisecond):
	}
}

// percentile returns the p-th percentile (0..100) of sorted durations.
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted) - 1) * p / 100
	return sorted[i]
}

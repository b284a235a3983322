package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// dialVia connects user through addr (the server's address, or a relay's)
// with the given changes to the configuration.
func dialVia(t testing.TB, srv *testserver.Server, addr, user string, change func(*client.Config)) *client.Client {
	t.Helper()
	cfg := srv.ClientConfig(user, "phone")
	cfg.Addr, cfg.Inbox = addr, 1024
	if change != nil {
		change(&cfg)
	}
	return testserver.Dial(t, cfg)
}

// chatFlow has a and b send n messages each to the other, one after the
// other, while during runs (switching networks, say). It then checks that
// each side received exactly the other's n messages: none lost, none
// twice, in the order sent, with increasing sequence numbers.
func chatFlow(t *testing.T, a, b *client.Client, n int, pace time.Duration, during func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	send := func(from, to *client.Client) {
		for i := range n {
			if _, err := from.Send(ctx, client.ToUser(to.User()), client.Outgoing{Text: fmt.Sprintf("%s-%d", from.User(), i)}); err != nil {
				t.Errorf("%s: send %d: %v", from.User(), i, err)
				return
			}
			time.Sleep(pace)
		}
	}
	got := make(map[string][]*qimpb.Message)
	var mu sync.Mutex
	recv := func(c *client.Client) {
		var msgs []*qimpb.Message
		defer func() {
			mu.Lock()
			got[c.User()] = msgs
			mu.Unlock()
		}()
		for len(msgs) < n {
			select {
			case m, ok := <-c.Messages():
				if !ok {
					t.Errorf("%s: session ended after %d messages: %v", c.User(), len(msgs), c.Err())
					return
				}
				msgs = append(msgs, m)
			case <-ctx.Done():
				t.Errorf("%s: received %d of %d", c.User(), len(msgs), n)
				return
			}
		}
	}
	wg.Go(func() { send(a, b) })
	wg.Go(func() { send(b, a) })
	wg.Go(func() { recv(a) })
	wg.Go(func() { recv(b) })
	if during != nil {
		during()
	}
	wg.Wait()
	for _, pair := range [][2]*client.Client{{a, b}, {b, a}} {
		to, from := pair[0], pair[1]
		msgs := got[to.User()]
		var last uint64
		for i, m := range msgs {
			if want := fmt.Sprintf("%s-%d", from.User(), i); client.Text(m) != want || m.Seq <= last {
				t.Fatalf("%s: message %d is %q (seq %d after %d), want %q", to.User(), i, client.Text(m), m.Seq, last, want)
			}
			last = m.Seq
		}
	}
	// Nothing more (no duplicates) arrives.
	for _, c := range []*client.Client{a, b} {
		select {
		case m := <-c.Messages():
			t.Fatalf("%s: extra message %q (seq %d)", c.User(), client.Text(m), m.Seq)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

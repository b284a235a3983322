package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitTime bounds every wait for the server in these tests.
const waitTime = 10 * time.Second

func startServer(t *testing.T) *testserver.Server {
	t.Helper()
	return testserver.Start(t, testserver.Options{})
}

// config returns the Config of user's device on srv.
func config(srv *testserver.Server, user, device string) client.Config {
	return srv.ClientConfig(user, device)
}

// dial connects user's device and closes it when the test ends.
func dial(t *testing.T, srv *testserver.Server, user, device string) *client.Client {
	t.Helper()
	return dialConfig(t, config(srv, user, device))
}

func dialConfig(t *testing.T, cfg client.Config) *client.Client {
	t.Helper()
	return testserver.Dial(t, cfg)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), waitTime)
	t.Cleanup(cancel)
	return ctx
}

// send sends text from c to to and fails the test on error.
func send(t *testing.T, c *client.Client, to client.Peer, text string) *qimpb.MessageAck {
	t.Helper()
	ack, err := c.Send(ctxT(t), to, client.Outgoing{Text: text})
	if err != nil {
		t.Fatalf("%s: Send to %v %q: %v", c.User(), to, text, err)
	}
	return ack
}

// recv returns the next n messages pushed to c.
func recv(t *testing.T, c *client.Client, n int) []*qimpb.Message {
	t.Helper()
	var got []*qimpb.Message
	timeout := time.NewTimer(waitTime)
	defer timeout.Stop()
	for len(got) < n {
		select {
		case m, ok := <-c.Messages():
			if !ok {
				t.Fatalf("%s/%s: session ended after %d of %d messages: %v", c.User(), c.Device(), len(got), n, c.Err())
			}
			got = append(got, m)
		case <-timeout.C:
			t.Fatalf("%s/%s: got %d of %d messages", c.User(), c.Device(), len(got), n)
		}
	}
	return got
}

// quiet checks that c receives nothing for a moment.
func quiet(t *testing.T, c *client.Client) {
	t.Helper()
	select {
	case m := <-c.Messages():
		t.Fatalf("%s/%s: unexpected message %v", c.User(), c.Device(), m)
	case <-time.After(300 * time.Millisecond):
	}
}

// wantCode checks that err is an *client.Error with code.
func wantCode(t *testing.T, err error, code qimpb.Code) {
	t.Helper()
	if !errors.Is(err, &client.Error{Code: code}) {
		t.Fatalf("got error %v, want %v", err, code)
	}
}

// eventually polls cond until it holds or waitTime passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTime)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

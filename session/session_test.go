package session_test

import (
	"context"
	"errors"
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

func dial(t *testing.T, srv *testserver.Server, org, appkey, user, device string) *client.Client {
	t.Helper()
	cfg := srv.ClientConfig(user, device)
	if org != cfg.Org || appkey != cfg.Appkey {
		cfg.Org, cfg.Appkey, cfg.Token = org, appkey, srv.TokenFor(org, appkey, user, time.Hour)
	}
	return testserver.Dial(t, cfg)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// recvN reads n messages or fails.
func recvN(t *testing.T, c *client.Client, n int) []*qimpb.Message {
	t.Helper()
	var got []*qimpb.Message
	timeout := time.After(20 * time.Second)
	for len(got) < n {
		select {
		case m, ok := <-c.Messages():
			if !ok {
				t.Fatalf("%s: session ended after %d of %d messages: %v", c.User(), len(got), n, c.Err())
			}
			got = append(got, m)
		case <-timeout:
			t.Fatalf("%s: got %d of %d messages", c.User(), len(got), n)
		}
	}
	return got
}

// quiet checks that nothing more arrives for a moment.
func quiet(t *testing.T, c *client.Client) {
	t.Helper()
	select {
	case m := <-c.Messages():
		t.Fatalf("%s: unexpected message %v", c.User(), m)
	case <-time.After(200 * time.Millisecond):
	}
}

// checkOrdered checks that msgs of one conversation are seqs from..from+n-1.
func checkOrdered(t *testing.T, msgs []*qimpb.Message, from uint64) {
	t.Helper()
	for i, m := range msgs {
		if m.Seq != from+uint64(i) {
			t.Fatalf("message %d has seq %d, want %d (text %q)", i, m.Seq, from+uint64(i), client.Text(m))
		}
	}
}

// TestRestartKeepsUndelivered stores messages for an offline user, restarts
// the server, and checks the user gets them all, in order, once, and that
// acknowledged messages are not sent again after another restart.
func TestRestartKeepsUndelivered(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	alice := dial(t, srv, "demo", "demo", "alice", "phone")
	for i := range 20 {
		if _, err := alice.Send(ctxT(t), client.ToUser("bob"), client.Outgoing{Text: fmt.Sprint("m", i)}); err != nil {
			t.Fatal(err)
		}
	}
	alice.Close()
	srv.Restart()

	bob := dial(t, srv, "demo", "demo", "bob", "phone")
	got := recvN(t, bob, 20)
	checkOrdered(t, got, 1)
	for i, m := range got {
		if client.Text(m) != fmt.Sprint("m", i) || m.FromUser != "alice" || m.Id == 0 || m.Timestamp == 0 {
			t.Fatalf("message %d: %v", i, m)
		}
	}
	quiet(t, bob)
	bob.Close() // flushes acknowledgements
	srv.Restart()
	bob = dial(t, srv, "demo", "demo", "bob", "phone")
	quiet(t, bob)
}

// TestConcurrentSendersOrder has several users send into one group at once
// while members with two devices each read: every device sees every message
// once, in seq order, with no gaps.
func TestConcurrentSendersOrder(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	owner := dial(t, srv, "demo", "demo", "u0", "a")
	g, err := owner.CreateGroup(ctxT(t), "busy")
	if err != nil {
		t.Fatal(err)
	}
	const users, per = 4, 25
	senders := []*client.Client{owner}
	for i := 1; i < users; i++ {
		c := dial(t, srv, "demo", "demo", fmt.Sprint("u", i), "a")
		if _, err := c.JoinGroup(ctxT(t), g.Id); err != nil {
			t.Fatal(err)
		}
		senders = append(senders, c)
	}
	// Second devices of every user, reading only.
	var readers []*client.Client
	for i := range users {
		readers = append(readers, dial(t, srv, "demo", "demo", fmt.Sprint("u", i), "b"))
	}
	var wg sync.WaitGroup
	for _, c := range senders {
		wg.Go(func() {
			for j := range per {
				if _, err := c.Send(ctxT(t), client.ToGroup(g.Id), client.Outgoing{Text: fmt.Sprint(c.User(), "-", j)}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	for _, r := range readers {
		checkOrdered(t, recvN(t, r, users*per), 1)
		quiet(t, r)
	}
	// Sending devices get everyone's messages but their own.
	for _, c := range senders {
		got := recvN(t, c, (users-1)*per)
		last := uint64(0)
		for _, m := range got {
			if m.Seq <= last || m.FromUser == c.User() {
				t.Fatalf("%s: bad message %v after seq %d", c.User(), m, last)
			}
			last = m.Seq
		}
		quiet(t, c)
	}
}

// TestApplicationIsolation checks that nothing crosses between
// applications: same user names, group ids of the other application.
func TestApplicationIsolation(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{Apps: []string{"acme/chat"}})
	demoAlice := dial(t, srv, "demo", "demo", "alice", "d")
	demoBob := dial(t, srv, "demo", "demo", "bob", "d")
	acmeAlice := dial(t, srv, "acme", "chat", "alice", "d")
	acmeBob := dial(t, srv, "acme", "chat", "bob", "d")

	g, err := demoAlice.CreateGroup(ctxT(t), "demo only")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := demoAlice.Send(ctxT(t), client.ToUser("bob"), client.Outgoing{Text: "for demo bob"}); err != nil {
		t.Fatal(err)
	}
	recvN(t, demoBob, 1)
	quiet(t, acmeBob)

	// acme cannot see, join, read or send to the demo group.
	var ce *client.Error
	if _, err := acmeAlice.JoinGroup(ctxT(t), g.Id); !errors.As(err, &ce) || ce.Code != qimpb.Code_NOT_FOUND {
		t.Fatalf("join other app's group: %v, want NOT_FOUND", err)
	}
	if _, err := acmeAlice.Send(ctxT(t), client.ToGroup(g.Id), client.Outgoing{Text: "x"}); !errors.As(err, &ce) || ce.Code != qimpb.Code_NOT_FOUND {
		t.Fatalf("send to other app's group: %v, want NOT_FOUND", err)
	}
	if _, err := acmeAlice.History(ctxT(t), g.Id, 0, 10); !errors.As(err, &ce) || ce.Code != qimpb.Code_NOT_FOUND {
		t.Fatalf("history of other app's group: %v, want NOT_FOUND", err)
	}
	if gs, err := acmeAlice.Groups(ctxT(t)); err != nil || len(gs) != 0 {
		t.Fatalf("acme alice groups: %v %v", gs, err)
	}
	// acme bob talking to "alice" reaches acme alice only.
	if _, err := acmeBob.Send(ctxT(t), client.ToUser("alice"), client.Outgoing{Text: "acme hello"}); err != nil {
		t.Fatal(err)
	}
	m := recvN(t, acmeAlice, 1)[0]
	if client.Text(m) != "acme hello" || m.Seq != 1 {
		t.Fatalf("acme alice got %v", m)
	}
	quiet(t, demoAlice)
}

// TestEphemeral checks offline=false: online devices get it, nothing is
// stored, offline devices never see it.
func TestEphemeral(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	alice := dial(t, srv, "demo", "demo", "alice", "d")
	bob := dial(t, srv, "demo", "demo", "bob", "d")
	ack, err := alice.Send(ctxT(t), client.ToUser("bob"), client.Outgoing{Text: "typing...", NoOffline: true})
	if err != nil {
		t.Fatal(err)
	}
	if ack.Seq != 0 {
		t.Fatalf("ephemeral ack has seq %d", ack.Seq)
	}
	if m := recvN(t, bob, 1)[0]; m.Seq != 0 || client.Text(m) != "typing..." {
		t.Fatalf("got %v", m)
	}
	// A stored message after it starts the sequence at 1.
	ack, err = alice.Send(ctxT(t), client.ToUser("bob"), client.Outgoing{Text: "stored"})
	if err != nil || ack.Seq != 1 {
		t.Fatalf("ack %v err %v", ack, err)
	}
	recvN(t, bob, 1)
	// Carol is offline: an ephemeral message for her is gone.
	if _, err := alice.Send(ctxT(t), client.ToUser("carol"), client.Outgoing{Text: "gone", NoOffline: true}); err != nil {
		t.Fatal(err)
	}
	carol := dial(t, srv, "demo", "demo", "carol", "d")
	quiet(t, carol)
}

// TestClientMsgIDReuse checks de-duplication: a retry is answered with the
// original, and the same id for another conversation is refused.
func TestClientMsgIDReuse(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	alice := dial(t, srv, "demo", "demo", "alice", "d")
	first, err := alice.Send(ctxT(t), client.ToUser("bob"), client.Outgoing{Text: "once", ClientMsgID: "c-1"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := alice.Send(ctxT(t), client.ToUser("bob"), client.Outgoing{Text: "once", ClientMsgID: "c-1"})
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || again.Id != first.Id || again.Seq != first.Seq || again.Timestamp != first.Timestamp {
		t.Fatalf("retry answered %v, want the original %v", again, first)
	}
	_, err = alice.Send(ctxT(t), client.ToUser("carol"), client.Outgoing{Text: "other", ClientMsgID: "c-1"})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != qimpb.Code_INVALID_ARGUMENT {
		t.Fatalf("same id to another conversation: %v, want INVALID_ARGUMENT", err)
	}
	bob := dial(t, srv, "demo", "demo", "bob", "d")
	recvN(t, bob, 1)
	quiet(t, bob)
}

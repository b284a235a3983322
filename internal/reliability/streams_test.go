package reliability_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/testserver"
	"github.com/qim-im/qim/store"
)

// TestStreamsManyConversations holds 5,000 conversations on one connection
// in each direction, five times what QUIC lets either side keep open at
// once: device a1 of user a sends one message to each of 5,000 users (a1
// opens the streams), while a2 (the library) and a3 (a raw device written
// from PROTOCOL.md) of the same user receive all 5,000 on streams the server
// opens. Both sides must end idle streams and open new ones; before they
// did, a1 could not open its 1,000th stream and a2 and a3 got 1,000 pushes.
func TestStreamsManyConversations(t *testing.T) {
	const peers = 5000
	srv := testserver.Start(t, testserver.Options{SendRate: -1}) // this scenario is not about rate limits
	a1 := dial(t, demoConfig(srv, "a", "a1"))
	cfg := demoConfig(srv, "a", "a2")
	cfg.Inbox = peers
	a2 := dial(t, cfg)
	a3 := dialRawDevice(t, srv.Addr, srv.ClientTLS(), "a", srv.Token("a"), "a3")

	start := time.Now()
	sendAll(t, peers, func(ctx context.Context, i int) error {
		_, err := a1.Send(ctx, client.Peer{User: fmt.Sprintf("u%04d", i)}, client.Outgoing{Text: "hi"})
		return err
	})
	sent := time.Since(start)

	got := recv(t, a2, peers, waitTime)
	seen := make(map[string]bool, peers)
	for _, m := range got {
		if m.GetFromUser() != "a" || m.GetSeq() != 1 || seen[m.GetToUser()] {
			t.Fatalf("a2: unexpected message %v", m)
		}
		seen[m.GetToUser()] = true
	}
	want := make(map[string]int, peers)
	for i := range peers {
		want[store.DirectConv("a", fmt.Sprintf("u%04d", i))] = 1
	}
	a3.waitFor(t, want, waitTime)
	if n := a3.total.Load(); n != peers {
		t.Errorf("raw device got %d pushes, want %d (each once)", n, peers)
	}
	t.Logf("%d conversations on one connection: sent by a1 in %v, all received by a2 and a3 after %v",
		peers, sent.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// TestStreamsGroupInviteFlood is the attack of issue 9 at a larger scale
// than it needed: another user creates 1,200 groups, invites the victim to
// each (an invite needs no consent) and writes once in each. Every message
// reaches the victim's devices, and then so does a new friend's message,
// while the victim's connections stay up. Before streams were ended, the
// 1:1 message was stored and acknowledged but not pushed.
func TestStreamsGroupInviteFlood(t *testing.T) {
	const groups = 1200
	srv := testserver.Start(t, testserver.Options{SendRate: -1}) // the attack at its fastest
	lib := dial(t, demoConfig(srv, "victim", "phone"))
	raw := dialRawDevice(t, srv.Addr, srv.ClientTLS(), "victim", srv.Token("victim"), "raw")
	mallory := dial(t, demoConfig(srv, "mallory", "laptop"))

	ids := make([]string, groups)
	sendAll(t, groups, func(ctx context.Context, i int) error {
		g, err := mallory.CreateGroup(ctx, fmt.Sprintf("g%d", i))
		if err != nil {
			return err
		}
		ids[i] = g.GetId()
		if err := mallory.Invite(ctx, g.GetId(), "victim"); err != nil {
			return err
		}
		_, err = mallory.Send(ctx, client.Peer{Group: g.GetId()}, client.Outgoing{Text: "spam"})
		return err
	})
	want := make(map[string]int, groups+1)
	for _, id := range ids {
		want[store.GroupConv(id)] = 1
	}
	if got := recv(t, lib, groups, waitTime); len(got) != groups {
		t.Fatalf("library device got %d group messages", len(got))
	}

	friend := dial(t, demoConfig(srv, "friend", "phone"))
	if _, err := friend.Send(ctxT(t), client.Peer{User: "victim"}, client.Outgoing{Text: "hello"}); err != nil {
		t.Fatal(err)
	}
	m := recv(t, lib, 1, 5*time.Second)[0]
	if m.GetFromUser() != "friend" || client.Text(m) != "hello" {
		t.Fatalf("library device: got %v, want the friend's message", m)
	}
	want[store.DirectConv("friend", "victim")] = 1
	raw.waitFor(t, want, 5*time.Second)
	if n := raw.total.Load(); n != groups+1 {
		t.Errorf("raw device got %d pushes, want %d", n, groups+1)
	}
	if lib.Err() != nil || raw.qc.Context().Err() != nil {
		t.Errorf("a connection of the victim ended: library %v, raw %v", lib.Err(), raw.qc.Context().Err())
	}
}

// sendAll runs f for 0..n-1 on 32 goroutines and fails the test on the
// first error.
func sendAll(t *testing.T, n int, f func(ctx context.Context, i int) error) {
	t.Helper()
	ctx := ctxT(t)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(ctx, i); err != nil {
					errs <- fmt.Errorf("%d: %w", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}


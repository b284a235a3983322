package clustertest

import (
	"testing"
	"time"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/daemon"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
)

// TestClusterSoftEvents: receipts, typing, presence and group receipt
// watches cross nodes: alice is on node 0, bob on node 1, carol on node 2.
func TestClusterSoftEvents(t *testing.T) {
	c := startCluster(t, 3, testserver.Options{Configure: func(cfg *daemon.Config) { cfg.PresenceGrace = 500 * time.Millisecond }})
	ctx := ctxT(t)
	alice, bob, carol := dial(t, c, 0, "alice", "phone"), dial(t, c, 1, "bob", "phone"), dial(t, c, 2, "carol", "phone")
	for _, p := range [][2]*client.Client{{alice, bob}, {bob, alice}} {
		if err := p[0].AddContact(ctx, p[1].User()); err != nil {
			t.Fatal(err)
		}
	}
	var got []*qimpb.Event
	next := func(c *client.Client, what string, ok func(*qimpb.Event) bool) {
		t.Helper()
		deadline := time.After(waitTime)
		for {
			select {
			case ev := <-c.Events():
				got = append(got, ev)
				if ok(ev) {
					return
				}
			case <-deadline:
				t.Fatalf("%s: no %s within %v; got %v", c.User(), what, waitTime, got)
			}
		}
	}
	// Presence: bob, on node 1, learns alice's (online) from node 0.
	next(bob, "presence of alice", func(ev *qimpb.Event) bool { return ev.Presence.GetUser() == "alice" })
	// Read receipts: bob reads alice's message; alice hears it.
	ack, err := alice.Send(ctx, client.ToUser("bob"), client.Outgoing{Text: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	collect(t, bob, 1, waitTime)
	next(alice, "delivered receipt", func(ev *qimpb.Event) bool { return ev.Receipt.GetDelivered() == ack.Seq })
	if _, err := bob.Read(ctx, client.ToUser("alice"), ack.Seq); err != nil {
		t.Fatal(err)
	}
	next(alice, "read receipt", func(ev *qimpb.Event) bool { return ev.Receipt.GetRead() == ack.Seq })
	// Typing.
	if err := bob.Typing(ctx, client.ToUser("alice"), true); err != nil {
		t.Fatal(err)
	}
	next(alice, "typing", func(ev *qimpb.Event) bool { return ev.Typing.GetFromUser() == "bob" })
	// A group watch on node 0 counts a read made on node 2.
	g, err := alice.CreateGroup(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := carol.JoinGroup(ctx, g.Id); err != nil {
		t.Fatal(err)
	}
	gack, err := alice.Send(ctx, client.ToGroup(g.Id), client.Outgoing{Text: "all"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.GroupReceipts(ctx, g.Id, gack.Seq, "", 0, true); err != nil {
		t.Fatal(err)
	}
	collect(t, carol, 1, waitTime)
	if _, err := carol.Read(ctx, client.ToGroup(g.Id), gack.Seq); err != nil {
		t.Fatal(err)
	}
	next(alice, "receipt count with carol's read", func(ev *qimpb.Event) bool { return ev.ReceiptCount.GetRead() == 1 })
	// Presence: alice leaves node 0; bob, on node 1, sees her offline.
	alice.Close()
	next(bob, "alice offline", func(ev *qimpb.Event) bool {
		return ev.Presence.GetUser() == "alice" && ev.Presence.GetState() == qimpb.PresenceState_OFFLINE
	})
}

package clustertest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
)

// TestClusterKick has the owner on node 0 kick mallory, whose device is on
// node 1 (where the group's member list is cached, as she wrote to it), and
// checks that she stops receiving the group's messages at once and cannot
// write to it, while a member on node 2 keeps receiving.
func TestClusterKick(t *testing.T) {
	c := startCluster(t, 3, testserver.Options{})
	owner := dial(t, c, 0, "owner", "phone")
	mallory := dial(t, c, 1, "mallory", "phone")
	bob := dial(t, c, 2, "bob", "phone")
	g, err := owner.CreateGroup(ctxT(t), "g")
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"mallory", "bob"} {
		if err := owner.Invite(ctxT(t), g.Id, u); err != nil {
			t.Fatal(err)
		}
	}
	// Every node caches the member list: each member writes once.
	for _, cl := range []*client.Client{owner, mallory, bob} {
		if _, err := cl.Send(ctxT(t), client.ToGroup(g.Id), client.Outgoing{Text: "hi from " + cl.User()}); err != nil {
			t.Fatal(err)
		}
	}
	collect(t, mallory, 2, waitTime)
	collect(t, bob, 2, waitTime)

	if err := owner.Kick(ctxT(t), g.Id, "mallory"); err != nil {
		t.Fatal(err)
	}
	// Her node learns of the kick through NATS (Event.Group), or within
	// the member cache's TTL (5 s) if that event were lost. Until then her
	// sends are still accepted (the documented bound): count them.
	accepted := 0
	eventually(t, 10*time.Second, "mallory's send refused", func() bool {
		_, err := mallory.Send(ctxT(t), client.ToGroup(g.Id), client.Outgoing{Text: "still here?"})
		if err == nil {
			accepted++
			return false
		}
		var ce *client.Error
		return errors.As(err, &ce) && (ce.Code == qimpb.Code_NOT_FOUND || ce.Code == qimpb.Code_FORBIDDEN)
	})
	if accepted > 0 {
		t.Logf("%d send(s) of mallory accepted before her node learned of the kick", accepted)
	}
	for i := range 5 {
		if _, err := owner.Send(ctxT(t), client.ToGroup(g.Id), client.Outgoing{Text: "after the kick"}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	// Bob gets what was accepted, and nothing of mallory's refused sends.
	got := collect(t, bob, 5+accepted, waitTime)
	fromMallory := 0
	for _, m := range got {
		switch m.FromUser {
		case "owner":
		case "mallory":
			fromMallory++
		default:
			t.Fatalf("bob received %q from %s", client.Text(m), m.FromUser)
		}
	}
	if fromMallory != accepted {
		t.Fatalf("bob received %d messages of mallory after her kick; %d were accepted", fromMallory, accepted)
	}
	quiet(t, mallory, 500*time.Millisecond)
	quiet(t, bob, 100*time.Millisecond)
}

// TestClusterReplaced connects a device on node 0 and then the same
// device on node 2: the connection on node 0 is closed with REPLACED, and
// the new one receives what is sent next.
func TestClusterReplaced(t *testing.T) {
	c := startCluster(t, 3, testserver.Options{})
	old := dial(t, c, 0, "alice", "phone")
	fresh := dial(t, c, 2, "alice", "phone")
	select {
	case <-old.Done():
	case <-time.After(waitTime):
		t.Fatal("the connection on node 0 was not replaced")
	}
	if err := old.Err(); !errors.Is(err, &client.Error{Code: qimpb.Code_REPLACED}) {
		t.Fatalf("the old connection ended with %v, want REPLACED", err)
	}
	bob := dial(t, c, 1, "bob", "phone")
	if _, err := bob.Send(ctxT(t), client.ToUser("alice"), client.Outgoing{Text: "hello"}); err != nil {
		t.Fatal(err)
	}
	if m := collect(t, fresh, 1, waitTime)[0]; client.Text(m) != "hello" {
		t.Fatalf("the new connection received %q", client.Text(m))
	}
	select {
	case <-fresh.Done():
		t.Fatalf("the new connection ended: %v", fresh.Err())
	default:
	}
}

// TestClusterLogout ends a user's sessions from one node (as `qimd logout`
// does through that node's admin socket): her devices on every node are
// told UNAUTHENTICATED, and another user's are not.
func TestClusterLogout(t *testing.T) {
	c := startCluster(t, 3, testserver.Options{})
	var devices []*client.Client
	for i := range 3 {
		devices = append(devices, dial(t, c, i, "alice", fmt.Sprintf("dev%d", i)))
	}
	bob := dial(t, c, 1, "bob", "phone")
	if n := c.Nodes[0].Daemon().Devices().EndSessions("demo", "demo", "alice"); n != 1 {
		t.Fatalf("EndSessions ended %d sessions on node 0, want 1", n)
	}
	for i, d := range devices {
		select {
		case <-d.Done():
		case <-time.After(waitTime):
			t.Fatalf("alice's device on node %d is still connected", i)
		}
		if err := d.Err(); !errors.Is(err, &client.Error{Code: qimpb.Code_UNAUTHENTICATED}) {
			t.Fatalf("alice's device on node %d ended with %v, want UNAUTHENTICATED", i, err)
		}
	}
	select {
	case <-bob.Done():
		t.Fatalf("bob's session ended: %v", bob.Err())
	case <-time.After(200 * time.Millisecond):
	}
}

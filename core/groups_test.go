package core

import (
	"context"
	"slices"
	"sync"
	"testing"

	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// TestKickRevokes checks that a kick stops the kicked user's pushes at
// once (Event.Revoke of the group's conversation), keeps them out, and
// that a leave does the same for the user who left.
func TestKickRevokes(t *testing.T) {
	h := newHub(t, Config{})
	owner, mallory, bob := listen(t, h, "app", "owner"), listen(t, h, "app", "mallory"), listen(t, h, "app", "bob")
	g := group(t, h, "app", "owner", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_CREATE, Name: "g"}).Group.Id
	for _, u := range []string{"mallory", "bob"} {
		group(t, h, "app", u, &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_JOIN, GroupId: g})
	}
	group(t, h, "app", "owner", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_KICK, GroupId: g, User: "mallory"})
	if got := mallory.revoked(); !slices.Equal(got, []string{store.GroupConv(g)}) {
		t.Fatalf("mallory's revocations: %v", got)
	}
	if n := len(owner.revoked()) + len(bob.revoked()); n != 0 {
		t.Fatalf("%d revocations for members who stay", n)
	}
	_, err := h.Group(context.Background(), "app", "mallory", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_JOIN, GroupId: g})
	wantCode(t, "join after a kick", err, qimpb.Code_FORBIDDEN)
	_, err = h.CheckMessage(context.Background(), "app", "mallory", text("mallory", g, "let me in"))
	wantCode(t, "send after a kick", err, qimpb.Code_FORBIDDEN)
	send(t, h, "app", text("bob", g, "after the kick"))
	eventually(t, "owner gets bob's message", func() bool { return len(owner.msgs()) == 1 })
	if n := len(mallory.msgs()); n != 0 {
		t.Fatalf("mallory got %d messages after the kick", n)
	}
	group(t, h, "app", "bob", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_LEAVE, GroupId: g})
	if got := bob.revoked(); !slices.Equal(got, []string{store.GroupConv(g)}) {
		t.Fatalf("bob's revocations after leaving: %v", got)
	}
}

// TestKickRace races a kick against the victim's join, and against an
// invitation of the victim by a member who is not the owner, 1,000 times
// each: whatever the order, the victim never ends up a member, neither in
// the store nor in the hub's cached view of the group.
func TestKickRace(t *testing.T) {
	h := newHub(t, Config{SendRate: -1, InvitesPerHour: -1})
	ctx := context.Background()
	for _, name := range []string{"join", "invite by a member"} {
		t.Run(name, func(t *testing.T) {
			for i := range 1000 {
				g := group(t, h, "app", "owner", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_CREATE, Name: "race"}).Group.Id
				group(t, h, "app", "member", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_JOIN, GroupId: g})
				enter := &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_JOIN, GroupId: g}
				by := "victim"
				if name != "join" {
					enter = &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_INVITE, GroupId: g, User: "victim"}
					by = "member"
				}
				// Warm the cache so that a stale snapshot could be served.
				group(t, h, "app", "owner", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_MEMBERS, GroupId: g})
				var wg sync.WaitGroup
				var kickErr, enterErr error
				wg.Go(func() {
					_, kickErr = h.Group(ctx, "app", "owner", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_KICK, GroupId: g, User: "victim"})
				})
				wg.Go(func() { _, enterErr = h.Group(ctx, "app", by, enter) })
				wg.Wait()
				if kickErr != nil {
					t.Fatalf("loop %d: kick: %v", i, kickErr)
				}
				if code, _ := CodeOf(enterErr); code != qimpb.Code_OK && code != qimpb.Code_FORBIDDEN {
					t.Fatalf("loop %d: %s: %v", i, name, enterErr)
				}
				stored, err := h.Store().Members(ctx, "app", g)
				if err != nil {
					t.Fatal(err)
				}
				cached := group(t, h, "app", "owner", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_MEMBERS, GroupId: g}).Members
				if slices.Contains(stored, "victim") || slices.Contains(cached, "victim") {
					t.Fatalf("loop %d: the kicked user is a member (store %v, hub %v; %s: %v)", i, stored, cached, name, enterErr)
				}
				if _, err := h.CheckMessage(ctx, "app", "victim", text("victim", g, "in?")); err == nil {
					t.Fatalf("loop %d: the kicked user may send to the group", i)
				}
			}
		})
	}
}

// TestGroupRequests checks the refusals of group requests.
func TestGroupRequests(t *testing.T) {
	h := newHub(t, Config{MaxGroupMembers: 2})
	ctx := context.Background()
	g := group(t, h, "app", "owner", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_CREATE, Name: "g"}).Group.Id
	group(t, h, "app", "bob", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_JOIN, GroupId: g})
	for _, tt := range []struct {
		name string
		user string
		req  *qimpb.GroupRequest
		want qimpb.Code
	}{
		{"unknown op", "owner", &qimpb.GroupRequest{Op: 99}, qimpb.Code_INVALID_ARGUMENT},
		{"empty name", "owner", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_CREATE}, qimpb.Code_INVALID_ARGUMENT},
		{"no such group", "owner", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_JOIN, GroupId: "gnosuchgroup0000"}, qimpb.Code_NOT_FOUND},
		{"other app", "owner", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_JOIN, GroupId: g}, qimpb.Code_NOT_FOUND},
		{"full", "carol", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_JOIN, GroupId: g}, qimpb.Code_LIMIT_EXCEEDED},
		{"kick by a member", "bob", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_KICK, GroupId: g, User: "owner"}, qimpb.Code_FORBIDDEN},
		{"kick oneself", "owner", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_KICK, GroupId: g, User: "owner"}, qimpb.Code_INVALID_ARGUMENT},
		{"members by a stranger", "carol", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_MEMBERS, GroupId: g}, qimpb.Code_FORBIDDEN},
		{"history by a stranger", "carol", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_HISTORY, GroupId: g}, qimpb.Code_FORBIDDEN},
		{"invite by a stranger", "carol", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_INVITE, GroupId: g, User: "dave"}, qimpb.Code_FORBIDDEN},
		{"leave by a stranger", "carol", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_LEAVE, GroupId: g}, qimpb.Code_FORBIDDEN},
	} {
		t.Run(tt.name, func(t *testing.T) {
			app := "app"
			if tt.name == "other app" {
				app = "other"
			}
			_, err := h.Group(ctx, app, tt.user, tt.req)
			wantCode(t, tt.name, err, tt.want)
		})
	}
}

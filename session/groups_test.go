package session_test

import (
	"errors"
	"testing"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
)

// wantCode fails the test unless err is a refusal with code want.
func wantCode(t *testing.T, what string, err error, want qimpb.Code) {
	t.Helper()
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != want {
		t.Fatalf("%s: %v, want %v", what, err, want)
	}
}

// TestInviteLimit has a stranger put a user into groups by invitation: 50
// groups (the default per hour) go through, the 51st is LIMIT_EXCEEDED; an
// invitation that added nobody does not count; the user can still join by
// id, be invited by a contact, and other users are not affected.
func TestInviteLimit(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	stranger := dial(t, srv, "demo", "demo", "stranger", "d")
	helper := dial(t, srv, "demo", "demo", "helper", "d")
	victim := dial(t, srv, "demo", "demo", "victim", "d")
	friend := dial(t, srv, "demo", "demo", "friend", "d")
	ctx := ctxT(t)
	if err := victim.AddContact(ctx, "friend"); err != nil {
		t.Fatal(err)
	}
	newGroup := func(c *client.Client) string {
		t.Helper()
		g, err := c.CreateGroup(ctx, "g")
		if err != nil {
			t.Fatal(err)
		}
		return g.GetId()
	}

	// Invitations that add nobody take nothing: a member invites the
	// victim, whom the owner banned, and below, the victim is invited
	// twice to each group.
	banned := newGroup(stranger)
	if err := stranger.Invite(ctx, banned, "helper"); err != nil {
		t.Fatal(err)
	}
	if err := stranger.Kick(ctx, banned, "victim"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		wantCode(t, "a member invites a banned user", helper.Invite(ctx, banned, "victim"), qimpb.Code_FORBIDDEN)
	}
	for i := range 50 {
		id := newGroup(stranger)
		if err := stranger.Invite(ctx, id, "victim"); err != nil {
			t.Fatalf("invitation %d: %v", i+1, err)
		}
		if err := stranger.Invite(ctx, id, "victim"); err != nil {
			t.Fatalf("invitation %d again: %v", i+1, err)
		}
	}
	over := newGroup(stranger)
	wantCode(t, "invitation 51 by a stranger", stranger.Invite(ctx, over, "victim"), qimpb.Code_LIMIT_EXCEEDED)
	if m, err := stranger.Members(ctx, over); err != nil || len(m) != 1 {
		t.Fatalf("members after the refused invitation: %v, %v", m, err)
	}

	if _, err := victim.JoinGroup(ctx, over); err != nil {
		t.Fatalf("joining by id: %v", err)
	}
	if err := friend.Invite(ctx, newGroup(friend), "victim"); err != nil {
		t.Fatalf("invitation by a contact: %v", err)
	}
	if err := stranger.Invite(ctx, newGroup(stranger), "other"); err != nil {
		t.Fatalf("invitation of another user: %v", err)
	}
	gs, err := victim.Groups(ctx)
	if err != nil || len(gs) != 52 {
		t.Fatalf("the victim is in %d groups (%v), want 50 + 1 joined + 1 by a contact", len(gs), err)
	}
}

// TestEmptyGroupCloses empties a group: the last LEAVE is answered OK, and
// from then on JOIN and INVITE answer NOT_FOUND and nobody lists it.
func TestEmptyGroupCloses(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	alice := dial(t, srv, "demo", "demo", "alice", "d")
	bob := dial(t, srv, "demo", "demo", "bob", "d")
	ctx := ctxT(t)
	g, err := alice.CreateGroup(ctx, "short-lived")
	if err != nil {
		t.Fatal(err)
	}
	id := g.GetId()
	if _, err := bob.JoinGroup(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Send(ctx, client.ToGroup(id), client.Outgoing{Text: "bye"}); err != nil {
		t.Fatal(err)
	}
	if err := alice.LeaveGroup(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := bob.LeaveGroup(ctx, id); err != nil {
		t.Fatalf("the last member leaves: %v", err)
	}
	for _, tt := range []struct {
		name string
		err  error
	}{
		{"JOIN by the creator", second(alice.JoinGroup(ctx, id))},
		{"JOIN by the last member", second(bob.JoinGroup(ctx, id))},
		{"INVITE", alice.Invite(ctx, id, "bob")},
		{"MESSAGE", second(bob.Send(ctx, client.ToGroup(id), client.Outgoing{Text: "anyone?"}))},
		{"HISTORY", second(bob.History(ctx, id, 0, 10))},
	} {
		wantCode(t, tt.name, tt.err, qimpb.Code_NOT_FOUND)
	}
	for _, c := range []*client.Client{alice, bob} {
		if gs, err := c.Groups(ctx); err != nil || len(gs) != 0 {
			t.Fatalf("%s: groups %v, %v; want none", c.User(), gs, err)
		}
	}
}

func second[T any](_ T, err error) error { return err }

package storetest

import (
	"errors"
	"slices"
	"testing"

	"github.com/qim-im/qim/store"
)

func testContacts(t *testing.T, s store.Store) {
	ctx := t.Context()
	if got := mustContacts(t, s, appA, "alice"); len(got) != 0 {
		t.Errorf("no contacts yet: %v", got)
	}
	for _, c := range []string{"dave", "bob", "carol", "bob"} {
		if err := s.AddContact(ctx, appA, "alice", c); err != nil {
			t.Fatalf("AddContact(%s): %v", c, err)
		}
	}
	if got, want := mustContacts(t, s, appA, "alice"), []string{"bob", "carol", "dave"}; !slices.Equal(got, want) {
		t.Errorf("Contacts = %v, want %v", got, want)
	}
	for _, c := range []string{"carol", "nobody", "carol"} {
		if err := s.RemoveContact(ctx, appA, "alice", c); err != nil {
			t.Fatalf("RemoveContact(%s): %v", c, err)
		}
	}
	if got, want := mustContacts(t, s, appA, "alice"), []string{"bob", "dave"}; !slices.Equal(got, want) {
		t.Errorf("Contacts after remove = %v, want %v", got, want)
	}
	// Contact lists are per user, not symmetric.
	if got := mustContacts(t, s, appA, "bob"); len(got) != 0 {
		t.Errorf("Contacts(bob) = %v, want none", got)
	}
}

func testGroups(t *testing.T, s store.Store) {
	ctx := t.Context()
	if _, err := s.GetGroup(ctx, appA, "g1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetGroup of a missing group: %v, want ErrNotFound", err)
	}
	want := mustCreateGroup(t, s, appA, "g1", "alice")
	got, err := s.GetGroup(ctx, appA, "g1")
	if err != nil {
		t.Fatalf("GetGroup: %v", err)
	}
	if got != want {
		t.Errorf("GetGroup = %+v, want %+v", got, want)
	}
	err = s.CreateGroup(ctx, appA, store.Group{ID: "g1", Name: "again", Owner: "bob"})
	if !errors.Is(err, store.ErrExists) {
		t.Errorf("CreateGroup of an existing id: %v, want ErrExists", err)
	}
	if got, _ := s.GetGroup(ctx, appA, "g1"); got.Owner != "alice" || got.Name != want.Name {
		t.Errorf("failed CreateGroup changed the group: %+v", got)
	}
	if got := mustMembers(t, s, appA, "g1"); !slices.Equal(got, []string{"alice"}) {
		t.Errorf("Members of a new group = %v, want [alice]", got)
	}
	if got := groupIDs(mustUserGroups(t, s, appA, "alice")); !slices.Equal(got, []string{"g1"}) {
		t.Errorf("UserGroups(owner) = %v, want [g1]", got)
	}

	// LastSeq is current.
	mustAppend(t, s, group(appA, "alice", "g1", "", "1"), group(appA, "alice", "g1", "", "2"))
	if got, _ := s.GetGroup(ctx, appA, "g1"); got.LastSeq != 2 {
		t.Errorf("GetGroup LastSeq = %d, want 2", got.LastSeq)
	}
	if gs := mustUserGroups(t, s, appA, "alice"); len(gs) != 1 || gs[0].LastSeq != 2 || gs[0].Name != want.Name {
		t.Errorf("UserGroups = %+v, want g1 with LastSeq 2", gs)
	}

	// The owner leaves: the other member takes over, and nothing else
	// of the group changes.
	mustJoin(t, s, appA, "g1", "bob")
	if newOwner, err := s.LeaveGroup(ctx, appA, "g1", "alice"); err != nil || newOwner != "bob" {
		t.Fatalf("LeaveGroup(owner) = %q, %v; want bob", newOwner, err)
	}
	if got, _ := s.GetGroup(ctx, appA, "g1"); got.Owner != "bob" || got.Name != want.Name || got.Created != want.Created {
		t.Errorf("after the owner left: %+v, want owner bob", got)
	}

	// UserGroups is sorted by id.
	mustJoin(t, s, appA, "g1", "alice")
	for _, id := range []string{"g2", "a1", "g10"} {
		mustCreateGroup(t, s, appA, id, "carol")
		mustJoin(t, s, appA, id, "alice")
	}
	if got, want := groupIDs(mustUserGroups(t, s, appA, "alice")), []string{"a1", "g1", "g10", "g2"}; !slices.Equal(got, want) {
		t.Errorf("UserGroups = %v, want %v", got, want)
	}
}

func testGroupMembership(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustCreateGroup(t, s, appA, "g1", "mallory")
	for _, u := range []string{"zed", "bob", "alice"} {
		mustJoin(t, s, appA, "g1", u)
	}
	// Joining again is not an error and adds nothing.
	if added, err := s.JoinGroup(ctx, appA, "g1", "bob", 0); err != nil || added {
		t.Errorf("JoinGroup of a member = %t, %v; want false, nil", added, err)
	}
	if got, want := mustMembers(t, s, appA, "g1"), []string{"alice", "bob", "mallory", "zed"}; !slices.Equal(got, want) {
		t.Errorf("Members = %v, want %v", got, want)
	}

	// Leaving.
	if newOwner, err := s.LeaveGroup(ctx, appA, "g1", "bob"); err != nil || newOwner != "" {
		t.Fatalf("LeaveGroup = %q, %v; want no new owner", newOwner, err)
	}
	if _, err := s.LeaveGroup(ctx, appA, "g1", "bob"); !errors.Is(err, store.ErrNotMember) {
		t.Errorf("LeaveGroup of a non-member: %v, want ErrNotMember", err)
	}
	if got, want := mustMembers(t, s, appA, "g1"), []string{"alice", "mallory", "zed"}; !slices.Equal(got, want) {
		t.Errorf("Members after bob left = %v, want %v", got, want)
	}
	if got := mustUserGroups(t, s, appA, "bob"); len(got) != 0 {
		t.Errorf("UserGroups(bob) after leaving = %v", groupIDs(got))
	}
	mustJoin(t, s, appA, "g1", "bob") // leaving does not ban

	// Inviting: by a member only; idempotent.
	if _, err := s.InviteMember(ctx, appA, "g1", "eve", "carol", 0); !errors.Is(err, store.ErrNotMember) {
		t.Errorf("InviteMember by a non-member: %v, want ErrNotMember", err)
	}
	if slices.Contains(mustMembers(t, s, appA, "g1"), "carol") {
		t.Error("a non-member's invitation added carol")
	}
	if added, err := s.InviteMember(ctx, appA, "g1", "bob", "carol", 0); err != nil || !added {
		t.Errorf("InviteMember by a member = %t, %v; want true, nil", added, err)
	}
	if added, err := s.InviteMember(ctx, appA, "g1", "zed", "carol", 0); err != nil || added {
		t.Errorf("InviteMember of a member = %t, %v; want false, nil", added, err)
	}
	if got := groupIDs(mustUserGroups(t, s, appA, "carol")); !slices.Equal(got, []string{"g1"}) {
		t.Errorf("UserGroups(carol) = %v, want [g1]", got)
	}

	// Kicking: by the owner only; removes and bans.
	if err := s.KickMember(ctx, appA, "g1", "bob", "zed"); !errors.Is(err, store.ErrNotOwner) {
		t.Errorf("KickMember by a member: %v, want ErrNotOwner", err)
	}
	if err := s.KickMember(ctx, appA, "g1", "eve", "zed"); !errors.Is(err, store.ErrNotMember) {
		t.Errorf("KickMember by a non-member: %v, want ErrNotMember", err)
	}
	if err := s.KickMember(ctx, appA, "g1", "mallory", "mallory"); err == nil {
		t.Error("the owner kicked themself")
	}
	if err := s.KickMember(ctx, appA, "g1", "mallory", "zed"); err != nil {
		t.Fatalf("KickMember: %v", err)
	}
	if slices.Contains(mustMembers(t, s, appA, "g1"), "zed") {
		t.Error("kicked zed still a member")
	}
	if got := mustUserGroups(t, s, appA, "zed"); len(got) != 0 {
		t.Errorf("UserGroups(zed) after the kick = %v", groupIDs(got))
	}
	if _, err := s.JoinGroup(ctx, appA, "g1", "zed", 0); !errors.Is(err, store.ErrBanned) {
		t.Errorf("JoinGroup after a kick: %v, want ErrBanned", err)
	}
	// Only the owner's invitation lifts the ban.
	if _, err := s.InviteMember(ctx, appA, "g1", "bob", "zed", 0); !errors.Is(err, store.ErrBanned) {
		t.Errorf("a member invites a kicked user: %v, want ErrBanned", err)
	}
	if added, err := s.InviteMember(ctx, appA, "g1", "mallory", "zed", 0); err != nil || !added {
		t.Fatalf("the owner invites a kicked user = %t, %v; want true, nil", added, err)
	}
	if !slices.Contains(mustMembers(t, s, appA, "g1"), "zed") {
		t.Error("zed not a member after the owner's invitation")
	}
	if _, err := s.LeaveGroup(ctx, appA, "g1", "zed"); err != nil {
		t.Fatalf("LeaveGroup: %v", err)
	}
	mustJoin(t, s, appA, "g1", "zed") // the ban was lifted

	// A non-member can be banned ahead; bans are per group.
	if err := s.KickMember(ctx, appA, "g1", "mallory", "trudy"); err != nil {
		t.Fatalf("KickMember of a non-member: %v", err)
	}
	if _, err := s.JoinGroup(ctx, appA, "g1", "trudy", 0); !errors.Is(err, store.ErrBanned) {
		t.Errorf("JoinGroup after a ban ahead: %v, want ErrBanned", err)
	}
	mustCreateGroup(t, s, appA, "g2", "mallory")
	mustJoin(t, s, appA, "g2", "trudy")
}

// testGroupLimit checks maxMembers on JoinGroup and InviteMember.
func testGroupLimit(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustCreateGroup(t, s, appA, "g1", "alice")
	for _, u := range []string{"bob", "carol"} {
		if _, err := s.JoinGroup(ctx, appA, "g1", u, 3); err != nil {
			t.Fatalf("JoinGroup(%s) below the limit: %v", u, err)
		}
	}
	if _, err := s.JoinGroup(ctx, appA, "g1", "dave", 3); !errors.Is(err, store.ErrFull) {
		t.Errorf("JoinGroup of a full group: %v, want ErrFull", err)
	}
	if _, err := s.InviteMember(ctx, appA, "g1", "alice", "dave", 3); !errors.Is(err, store.ErrFull) {
		t.Errorf("InviteMember to a full group: %v, want ErrFull", err)
	}
	if added, err := s.JoinGroup(ctx, appA, "g1", "bob", 3); err != nil || added {
		t.Errorf("a member joins a full group again = %t, %v; want false, nil", added, err)
	}
	if got := mustMembers(t, s, appA, "g1"); len(got) != 3 {
		t.Errorf("Members = %v, want 3", got)
	}
	if _, err := s.LeaveGroup(ctx, appA, "g1", "carol"); err != nil {
		t.Fatalf("LeaveGroup: %v", err)
	}
	if _, err := s.InviteMember(ctx, appA, "g1", "alice", "dave", 3); err != nil {
		t.Errorf("InviteMember after a member left: %v", err)
	}
}

// testGroupOwnerHandOff checks that an owner who leaves is followed by the
// earliest remaining joiner, not the smallest user id.
func testGroupOwnerHandOff(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustCreateGroup(t, s, appA, "g1", "olga")
	mustJoin(t, s, appA, "g1", "zed")
	if _, err := s.InviteMember(ctx, appA, "g1", "zed", "carol", 0); err != nil {
		t.Fatalf("InviteMember: %v", err)
	}
	mustJoin(t, s, appA, "g1", "bob")
	mustJoin(t, s, appA, "g1", "alice")
	// alice leaves and joins again: she is now the latest joiner.
	if _, err := s.LeaveGroup(ctx, appA, "g1", "alice"); err != nil {
		t.Fatalf("LeaveGroup: %v", err)
	}
	mustJoin(t, s, appA, "g1", "alice")
	for _, want := range []string{"zed", "carol", "bob", "alice", ""} {
		owner := mustGetGroup(t, s, appA, "g1").Owner
		newOwner, err := s.LeaveGroup(ctx, appA, "g1", owner)
		if err != nil || newOwner != want {
			t.Fatalf("%s leaves: new owner %q, %v; want %q", owner, newOwner, err, want)
		}
		if want != "" && mustGetGroup(t, s, appA, "g1").Owner != want {
			t.Fatalf("GetGroup after %s left: owner %q, want %q", owner, mustGetGroup(t, s, appA, "g1").Owner, want)
		}
	}
}

// testGroupClosed checks that a group closes when its last member leaves:
// it is not found any more, its id stays taken, its messages stay.
func testGroupClosed(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustCreateGroup(t, s, appA, "g1", "alice")
	mustJoin(t, s, appA, "g1", "bob")
	if err := s.KickMember(ctx, appA, "g1", "alice", "carol"); err != nil {
		t.Fatalf("KickMember: %v", err)
	}
	mustAppend(t, s, group(appA, "alice", "g1", "", "1"), group(appA, "bob", "g1", "", "2"))
	for _, u := range []string{"alice", "bob"} {
		if _, err := s.LeaveGroup(ctx, appA, "g1", u); err != nil {
			t.Fatalf("LeaveGroup(%s): %v", u, err)
		}
	}
	for name, err := range map[string]error{
		"GetGroup":                second(s.GetGroup(ctx, appA, "g1")),
		"JoinGroup":               second(s.JoinGroup(ctx, appA, "g1", "alice", 0)),
		"JoinGroup of the banned": second(s.JoinGroup(ctx, appA, "g1", "carol", 0)),
		"InviteMember":            second(s.InviteMember(ctx, appA, "g1", "alice", "bob", 0)),
		"LeaveGroup":              second(s.LeaveGroup(ctx, appA, "g1", "alice")),
		"KickMember":              s.KickMember(ctx, appA, "g1", "alice", "bob"),
		"Members":                 second(s.Members(ctx, appA, "g1")),
	} {
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s of a closed group: %v, want ErrNotFound", name, err)
		}
	}
	for _, u := range []string{"alice", "bob", "carol"} {
		if got := mustUserGroups(t, s, appA, u); len(got) != 0 {
			t.Errorf("UserGroups(%s) = %v, want none", u, groupIDs(got))
		}
		if inInbox(t, s, appA, u, "phone", store.GroupConv("g1")) {
			t.Errorf("Inbox(%s) lists the closed group", u)
		}
	}
	if err := s.CreateGroup(ctx, appA, store.Group{ID: "g1", Name: "again", Owner: "mallory"}); !errors.Is(err, store.ErrExists) {
		t.Errorf("CreateGroup with a closed group's id: %v, want ErrExists", err)
	}
	if got := mustMessages(t, s, appA, store.GroupConv("g1"), 0, 10); len(got) != 2 {
		t.Errorf("a closed group's messages: %d, want 2", len(got))
	}
}

// testGroupNotFound pins down what the interface leaves open: group-scoped
// methods on a group that does not exist return ErrNotFound.
func testGroupNotFound(t *testing.T, s store.Store) {
	ctx := t.Context()
	for name, err := range map[string]error{
		"JoinGroup":    second(s.JoinGroup(ctx, appA, "nope", "alice", 0)),
		"InviteMember": second(s.InviteMember(ctx, appA, "nope", "alice", "bob", 0)),
		"LeaveGroup":   second(s.LeaveGroup(ctx, appA, "nope", "alice")),
		"KickMember":   s.KickMember(ctx, appA, "nope", "alice", "bob"),
		"Members":      second(s.Members(ctx, appA, "nope")),
	} {
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s of a missing group: %v, want ErrNotFound", name, err)
		}
	}
	if got := mustUserGroups(t, s, appA, "alice"); len(got) != 0 {
		t.Errorf("UserGroups after failed calls = %v", groupIDs(got))
	}
}

func second[T any](_ T, err error) error { return err }

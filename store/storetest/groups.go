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

	if err := s.SetGroupOwner(ctx, appA, "g1", "bob"); err != nil {
		t.Fatalf("SetGroupOwner: %v", err)
	}
	if got, _ := s.GetGroup(ctx, appA, "g1"); got.Owner != "bob" || got.Name != want.Name || got.Created != want.Created {
		t.Errorf("after SetGroupOwner: %+v, want owner bob", got)
	}

	// UserGroups is sorted by id.
	for _, id := range []string{"g2", "a1", "g10"} {
		mustCreateGroup(t, s, appA, id, "carol")
		mustAddMember(t, s, appA, id, "alice")
	}
	if got, want := groupIDs(mustUserGroups(t, s, appA, "alice")), []string{"a1", "g1", "g10", "g2"}; !slices.Equal(got, want) {
		t.Errorf("UserGroups = %v, want %v", got, want)
	}
}

func testGroupMembership(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustCreateGroup(t, s, appA, "g1", "mallory")
	for _, u := range []string{"zed", "bob", "alice", "bob"} {
		mustAddMember(t, s, appA, "g1", u)
	}
	if got, want := mustMembers(t, s, appA, "g1"), []string{"alice", "bob", "mallory", "zed"}; !slices.Equal(got, want) {
		t.Errorf("Members = %v, want %v", got, want)
	}

	// Removing without a ban.
	if err := s.RemoveMember(ctx, appA, "g1", "bob", false); err != nil {
		t.Fatalf("RemoveMember: %v", err)
	}
	if got, want := mustMembers(t, s, appA, "g1"), []string{"alice", "mallory", "zed"}; !slices.Equal(got, want) {
		t.Errorf("Members after removing bob = %v, want %v", got, want)
	}
	if mustBanned(t, s, appA, "g1", "bob") {
		t.Error("bob banned after RemoveMember without ban")
	}
	if got := mustUserGroups(t, s, appA, "bob"); len(got) != 0 {
		t.Errorf("UserGroups(bob) after removal = %v", groupIDs(got))
	}

	// Removing with a ban, then adding again lifts the ban.
	if err := s.RemoveMember(ctx, appA, "g1", "zed", true); err != nil {
		t.Fatalf("RemoveMember with ban: %v", err)
	}
	if !mustBanned(t, s, appA, "g1", "zed") {
		t.Error("zed not banned after RemoveMember with ban")
	}
	if slices.Contains(mustMembers(t, s, appA, "g1"), "zed") {
		t.Error("banned zed still a member")
	}
	if got := mustUserGroups(t, s, appA, "zed"); len(got) != 0 {
		t.Errorf("UserGroups(zed) after ban = %v", groupIDs(got))
	}
	if mustBanned(t, s, appA, "g1", "alice") {
		t.Error("alice banned")
	}
	mustAddMember(t, s, appA, "g1", "zed")
	if mustBanned(t, s, appA, "g1", "zed") {
		t.Error("zed still banned after AddMember")
	}
	if !slices.Contains(mustMembers(t, s, appA, "g1"), "zed") {
		t.Error("zed not a member after AddMember")
	}
	if got := groupIDs(mustUserGroups(t, s, appA, "zed")); !slices.Equal(got, []string{"g1"}) {
		t.Errorf("UserGroups(zed) = %v, want [g1]", got)
	}

	// Bans are per group.
	mustCreateGroup(t, s, appA, "g2", "mallory")
	if err := s.RemoveMember(ctx, appA, "g2", "alice", true); err != nil {
		t.Fatalf("RemoveMember: %v", err)
	}
	if mustBanned(t, s, appA, "g1", "alice") || !mustBanned(t, s, appA, "g2", "alice") {
		t.Error("a ban in g2 leaked to g1, or was not recorded")
	}
}

// testGroupNotFound pins down what the interface leaves open: group-scoped
// methods on a group that does not exist return ErrNotFound.
func testGroupNotFound(t *testing.T, s store.Store) {
	ctx := t.Context()
	for name, err := range map[string]error{
		"SetGroupOwner": s.SetGroupOwner(ctx, appA, "nope", "alice"),
		"AddMember":     s.AddMember(ctx, appA, "nope", "alice"),
		"RemoveMember":  s.RemoveMember(ctx, appA, "nope", "alice", true),
		"Members":       second(s.Members(ctx, appA, "nope")),
		"Banned":        second(s.Banned(ctx, appA, "nope", "alice")),
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

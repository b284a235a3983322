package storetest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/qim-im/qim/store"
)

// fillApp writes one of every kind of data under app.
func fillApp(t *testing.T, s store.Store, app string) {
	t.Helper()
	ctx := t.Context()
	mustAppend(t, s,
		direct(app, "alice", "bob", "c1", "hi bob"),
		direct(app, "bob", "alice", "c2", "hi alice"),
	)
	mustSetAcked(t, s, app, "bob", "phone", store.DirectConv("alice", "bob"), 1)
	mustCreateGroup(t, s, app, "g1", "alice")
	mustJoin(t, s, app, "g1", "bob")
	if err := s.KickMember(ctx, app, "g1", "alice", "carol"); err != nil {
		t.Fatalf("KickMember: %v", err)
	}
	mustAppend(t, s, group(app, "alice", "g1", "c3", "hi all"))
	mustSetAcked(t, s, app, "bob", "phone", store.GroupConv("g1"), 1)
	if err := s.AddContact(ctx, app, "alice", "bob"); err != nil {
		t.Fatalf("AddContact: %v", err)
	}
}

// testTenantIsolation checks that nothing written under one app is visible
// under another, for the same conversation keys, user names and group ids.
// The second app's id starts with the first's.
func testTenantIsolation(t *testing.T, s store.Store) {
	ctx := t.Context()
	fillApp(t, s, appA)
	for _, conv := range []string{store.DirectConv("alice", "bob"), store.GroupConv("g1")} {
		if got := mustLastSeq(t, s, appB, conv); got != 0 {
			t.Errorf("LastSeq(%s) in app B = %d", conv, got)
		}
		if got := mustMessages(t, s, appB, conv, 0, 100); len(got) != 0 {
			t.Errorf("Messages(%s) in app B: %d messages", conv, len(got))
		}
		if got := mustHistory(t, s, appB, conv, 0, 100); len(got) != 0 {
			t.Errorf("History(%s) in app B: %d messages", conv, len(got))
		}
	}
	for _, user := range []string{"alice", "bob", "carol"} {
		if got := mustInbox(t, s, appB, user, "phone"); len(got) != 0 {
			t.Errorf("Inbox(%s) in app B = %v", user, got)
		}
		if got := mustContacts(t, s, appB, user); len(got) != 0 {
			t.Errorf("Contacts(%s) in app B = %v", user, got)
		}
		if got := mustUserGroups(t, s, appB, user); len(got) != 0 {
			t.Errorf("UserGroups(%s) in app B = %v", user, groupIDs(got))
		}
	}
	if _, err := s.GetGroup(ctx, appB, "g1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetGroup(g1) in app B: %v, want ErrNotFound", err)
	}
	if m, err := s.Members(ctx, appB, "g1"); err == nil && len(m) != 0 {
		t.Errorf("Members(g1) in app B = %v", m)
	}

	// The same data written under app B is new there...
	res := mustAppend(t, s, direct(appB, "alice", "bob", "c1", "other"))
	if res[0].Duplicate || res[0].Msg.Seq != 1 {
		t.Errorf("app B: seq %d, Duplicate %t; want a new message with seq 1", res[0].Msg.Seq, res[0].Duplicate)
	}
	if err := s.CreateGroup(ctx, appB, store.Group{ID: "g1", Owner: "zed"}); err != nil {
		t.Errorf("CreateGroup(g1) in app B: %v", err)
	}
	if got := mustMembers(t, s, appB, "g1"); !slices.Equal(got, []string{"zed"}) {
		t.Errorf("Members(g1) in app B = %v, want [zed]", got)
	}
	if got := inboxConv(t, s, appB, "bob", "phone", store.DirectConv("alice", "bob")); got.Acked != 0 {
		t.Errorf("Inbox(bob) in app B: Acked %d, want 0", got.Acked)
	}

	// ...and app A is unchanged.
	if got := mustLastSeq(t, s, appA, store.DirectConv("alice", "bob")); got != 2 {
		t.Errorf("app A: LastSeq = %d, want 2", got)
	}
	if got := mustMembers(t, s, appA, "g1"); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Errorf("app A: Members(g1) = %v", got)
	}
	if got := inboxConv(t, s, appA, "bob", "phone", store.GroupConv("g1")); got.LastSeq != 1 || got.Acked != 1 {
		t.Errorf("app A: Inbox(bob) g1 = %+v", got)
	}
}

// testKeyPrefixes checks that ids that are prefixes of each other (users,
// devices, conversations, groups) do not see each other's data.
func testKeyPrefixes(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustAppend(t, s,
		direct(appA, "al", "bo", "1", "short"),
		direct(appA, "al", "bob", "1b", "long"),
		direct(appA, "alice", "bob", "2", "longer"),
	)
	if got := mustMessages(t, s, appA, store.DirectConv("al", "bo"), 0, 100); len(got) != 1 || text(t, got[0]) != "short" {
		t.Errorf("Messages(u:al:bo) = %d messages", len(got))
	}
	if got := mustInbox(t, s, appA, "al", "phone"); len(got) != 2 {
		t.Errorf("Inbox(al) = %v, want 2 conversations", got)
	}
	if got := mustInbox(t, s, appA, "bo", "phone"); len(got) != 1 {
		t.Errorf("Inbox(bo) = %v, want 1 conversation", got)
	}
	mustSetAcked(t, s, appA, "al", "ph", store.DirectConv("al", "bo"), 1)
	if got := inboxConv(t, s, appA, "al", "phone", store.DirectConv("al", "bo")); got.Acked != 0 {
		t.Errorf("device phone sees the cursor of device ph: Acked %d", got.Acked)
	}

	if err := s.AddContact(ctx, appA, "bob2", "x"); err != nil {
		t.Fatalf("AddContact: %v", err)
	}
	if got := mustContacts(t, s, appA, "bob"); len(got) != 0 {
		t.Errorf("Contacts(bob) = %v, want none", got)
	}

	mustCreateGroup(t, s, appA, "g1", "al")
	mustCreateGroup(t, s, appA, "g10", "alice")
	mustJoin(t, s, appA, "g10", "bob")
	if got := mustMembers(t, s, appA, "g1"); !slices.Equal(got, []string{"al"}) {
		t.Errorf("Members(g1) = %v, want [al]", got)
	}
	mustAppend(t, s, group(appA, "alice", "g10", "", "to g10"))
	if got := mustLastSeq(t, s, appA, store.GroupConv("g1")); got != 0 {
		t.Errorf("LastSeq(g:g1) = %d, want 0", got)
	}
	if got := groupIDs(mustUserGroups(t, s, appA, "al")); !slices.Equal(got, []string{"g1"}) {
		t.Errorf("UserGroups(al) = %v, want [g1]", got)
	}
}

// testClosed checks that every method returns ErrClosed after Close.
func testClosed(t *testing.T, s store.Store) {
	ctx := t.Context()
	fillApp(t, s, appA)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	conv := store.DirectConv("alice", "bob")
	for name, err := range map[string]error{
		"Append":        second(s.Append(ctx, []store.Append{direct(appA, "alice", "bob", "", "x")})),
		"Messages":      second(s.Messages(ctx, appA, conv, 0, 10)),
		"History":       second(s.History(ctx, appA, conv, 0, 10)),
		"LastSeq":       second(s.LastSeq(ctx, appA, conv)),
		"Inbox":         second(s.Inbox(ctx, appA, "alice", "phone")),
		"SetAcked":      s.SetAcked(ctx, appA, "alice", "phone", conv, 2),
		"AddContact":    s.AddContact(ctx, appA, "alice", "carol"),
		"RemoveContact": s.RemoveContact(ctx, appA, "alice", "bob"),
		"Contacts":      second(s.Contacts(ctx, appA, "alice")),
		"CreateGroup":   s.CreateGroup(ctx, appA, store.Group{ID: "g2", Owner: "alice"}),
		"GetGroup":      second(s.GetGroup(ctx, appA, "g1")),
		"JoinGroup":     second(s.JoinGroup(ctx, appA, "g1", "carol", 0)),
		"InviteMember":  second(s.InviteMember(ctx, appA, "g1", "alice", "carol", 0)),
		"LeaveGroup":    second(s.LeaveGroup(ctx, appA, "g1", "bob")),
		"KickMember":    s.KickMember(ctx, appA, "g1", "alice", "bob"),
		"Members":       second(s.Members(ctx, appA, "g1")),
		"UserGroups":    second(s.UserGroups(ctx, appA, "alice")),
		"ClaimPush":     second(s.ClaimPush(ctx, time.Now(), time.Minute, 10)),
		"RetryPush":     s.RetryPush(ctx, store.PushJob{ID: 1}),
		"FinishPush":    s.FinishPush(ctx, 1),
		"PushBacklog":   second(s.PushBacklog(ctx)),
		"DeliveredTo":   second(s.DeliveredTo(ctx, appA, conv, 1, []string{"alice"})),
		"SetRead":       third(s.SetRead(ctx, appA, "alice", conv, 1, true)),
		"Receipts":      second(s.Receipts(ctx, appA, conv, []string{"alice"})),
		"Prefs":         second(s.Prefs(ctx, appA, "alice")),
		"SetPrefs":      s.SetPrefs(ctx, appA, "alice", store.Prefs{HideReadReceipts: true}),
		"ContactOf":     second(s.ContactOf(ctx, appA, "bob", []string{"alice"})),
		"Close":         s.Close(),
	} {
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

// testInvalidIDs checks that ids the store cannot keep apart (empty, or
// holding NUL) are refused, not stored.
func testInvalidIDs(t *testing.T, s store.Store) {
	ctx := t.Context()
	for name, err := range map[string]error{
		"app with NUL":  s.AddContact(ctx, "org/a\x00b", "alice", "bob"),
		"empty user":    s.AddContact(ctx, appA, "", "bob"),
		"device w/ NUL": s.SetAcked(ctx, appA, "alice", "ph\x00one", "u:a:b", 1),
		"empty conv": func() error {
			_, err := s.Messages(ctx, appA, "", 0, 10)
			return err
		}(),
		"epoch of an empty device": func() error {
			_, err := s.NextEpoch(ctx, appA, "alice", "")
			return err
		}(),
		"delivered to a user with NUL": func() error {
			_, err := s.DeliveredTo(ctx, appA, "u:a:b", 1, []string{"alice", "b\x00ob"})
			return err
		}(),
		"delivered to an empty user": func() error {
			_, err := s.DeliveredTo(ctx, appA, "u:a:b", 1, []string{""})
			return err
		}(),
		"read cursor of a user with NUL": third(s.SetRead(ctx, appA, "al\x00ice", "u:a:b", 1, true)),
		"receipts of an empty user":      second(s.Receipts(ctx, appA, "u:a:b", []string{"alice", ""})),
		"prefs of an empty user":         s.SetPrefs(ctx, appA, "", store.Prefs{}),
		"contact of an owner with NUL":   second(s.ContactOf(ctx, appA, "bob", []string{"a\x00lice"})),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

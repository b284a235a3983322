package storetest

import (
	"testing"

	"github.com/qim-im/qim/store"
)

func testInboxDirect(t *testing.T, s store.Store) {
	conv := store.DirectConv("alice", "bob")
	if got := mustInbox(t, s, appA, "alice", "phone"); len(got) != 0 {
		t.Errorf("empty store: inbox %v", got)
	}
	mustAppend(t, s, direct(appA, "alice", "bob", "1", "hi"))

	// Both members have the conversation, unacknowledged on every device;
	// alice has read her own message.
	for _, tt := range []struct {
		user string
		read uint64
	}{{"alice", 1}, {"bob", 0}} {
		want := store.ConvState{Conv: conv, LastSeq: 1, Acked: 0, Read: tt.read}
		if got := inboxConv(t, s, appA, tt.user, "phone", conv); got != want {
			t.Errorf("Inbox(%s): %+v, want %+v", tt.user, got, want)
		}
	}
	if got := mustInbox(t, s, appA, "carol", "phone"); len(got) != 0 {
		t.Errorf("Inbox(carol): %v, want empty", got)
	}

	mustAppend(t, s, direct(appA, "bob", "alice", "2", "hello"), direct(appA, "alice", "bob", "3", "?"))
	mustSetAcked(t, s, appA, "bob", "phone", conv, 2)
	if got := inboxConv(t, s, appA, "bob", "phone", conv); got.LastSeq != 3 || got.Acked != 2 {
		t.Errorf("bob's phone: %+v, want LastSeq 3 Acked 2", got)
	}
	// Cursors are per device and per user.
	if got := inboxConv(t, s, appA, "bob", "laptop", conv); got.Acked != 0 {
		t.Errorf("bob's laptop: Acked %d, want 0", got.Acked)
	}
	if got := inboxConv(t, s, appA, "alice", "phone", conv); got.Acked != 0 {
		t.Errorf("alice's phone: Acked %d, want 0", got.Acked)
	}
	// A cursor never moves backwards.
	mustSetAcked(t, s, appA, "bob", "phone", conv, 1)
	mustSetAcked(t, s, appA, "bob", "phone", conv, 0)
	if got := inboxConv(t, s, appA, "bob", "phone", conv); got.Acked != 2 {
		t.Errorf("after acking back: Acked %d, want 2", got.Acked)
	}
	mustSetAcked(t, s, appA, "bob", "phone", conv, 3)
	if got := inboxConv(t, s, appA, "bob", "phone", conv); got.Acked != 3 {
		t.Errorf("after acking 3: Acked %d, want 3", got.Acked)
	}

	// Every conversation of the user is listed.
	mustAppend(t, s, direct(appA, "carol", "bob", "4", "hey"))
	var convs []string
	for _, c := range mustInbox(t, s, appA, "bob", "phone") {
		convs = append(convs, c.Conv)
	}
	if len(convs) != 2 {
		t.Errorf("Inbox(bob): %v, want %s and %s", convs, conv, store.DirectConv("bob", "carol"))
	}
}

func testInboxGroup(t *testing.T, s store.Store) {
	conv := store.GroupConv("g1")
	mustCreateGroup(t, s, appA, "g1", "alice")
	if got := inboxConv(t, s, appA, "alice", "phone", conv); got.LastSeq != 0 || got.Acked != 0 {
		t.Errorf("owner of a new group: %+v, want LastSeq 0 Acked 0", got)
	}
	for range 5 {
		mustAppend(t, s, group(appA, "alice", "g1", "", "before bob"))
	}

	// Bob joins after 5 messages: every device of his starts at 5.
	mustJoin(t, s, appA, "g1", "bob")
	if got, want := inboxConv(t, s, appA, "bob", "phone", conv), (store.ConvState{Conv: conv, LastSeq: 5, Acked: 5}); got != want {
		t.Errorf("Inbox(bob) after joining: %+v, want %+v", got, want)
	}
	if got := inboxConv(t, s, appA, "alice", "phone", conv); got.LastSeq != 5 || got.Acked != 0 {
		t.Errorf("Inbox(alice): %+v, want LastSeq 5 Acked 0", got)
	}

	mustAppend(t, s, group(appA, "alice", "g1", "", "after bob"), group(appA, "bob", "g1", "", "hi"))
	mustSetAcked(t, s, appA, "bob", "phone", conv, 6)
	if got := inboxConv(t, s, appA, "bob", "phone", conv); got.LastSeq != 7 || got.Acked != 6 {
		t.Errorf("bob's phone: %+v, want LastSeq 7 Acked 6", got)
	}
	if got := inboxConv(t, s, appA, "bob", "tablet", conv); got.Acked != 5 {
		t.Errorf("bob's new tablet: Acked %d, want the join point 5", got.Acked)
	}

	// Adding bob again keeps his join point.
	mustJoin(t, s, appA, "g1", "bob")
	if got := inboxConv(t, s, appA, "bob", "laptop", conv); got.Acked != 5 {
		t.Errorf("after adding again: new device Acked %d, want 5", got.Acked)
	}

	// A removed member no longer has the group.
	if _, err := s.LeaveGroup(t.Context(), appA, "g1", "bob"); err != nil {
		t.Fatalf("LeaveGroup: %v", err)
	}
	if inInbox(t, s, appA, "bob", "phone", conv) {
		t.Error("removed member still has the group in his inbox")
	}
	// Joining again after leaving starts from the new join point.
	mustAppend(t, s, group(appA, "alice", "g1", "", "while bob is away"))
	mustJoin(t, s, appA, "g1", "bob")
	if got := inboxConv(t, s, appA, "bob", "watch", conv); got.LastSeq != 8 || got.Acked != 8 {
		t.Errorf("after joining again: new device %+v, want LastSeq 8 Acked 8", got)
	}

	// A group without messages is listed too.
	mustCreateGroup(t, s, appA, "g2", "carol")
	mustJoin(t, s, appA, "g2", "bob")
	if got := inboxConv(t, s, appA, "bob", "phone", store.GroupConv("g2")); got.LastSeq != 0 || got.Acked != 0 {
		t.Errorf("empty group: %+v", got)
	}
}

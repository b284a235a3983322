package storetest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// RunReopen checks durability across a restart: it opens a store in a new
// directory, writes every kind of data, closes it, opens the same directory
// again and checks that everything is still there, that a retried
// ClientMsgId is still a duplicate, and that the next Append continues the
// seqs with a larger id; and that the offline-push outbox keeps its jobs,
// as retried, without those finished; and that read cursors (moved by
// Append and SetRead) and settings survive. open must open (creating if
// needed) the store kept in dir; RunReopen closes what it opens.
func RunReopen(t *testing.T, open func(t *testing.T, dir string) store.Store) {
	ctx := t.Context()
	dir := t.TempDir()
	direct1 := store.DirectConv("alice", "bob")
	group1 := store.GroupConv("g1")

	s := open(t, dir)
	fillApp(t, s, appA) // direct1 seqs 1-2, group1 seq 1
	res := mustAppend(t, s,
		direct(appA, "alice", "bob", "c4", "third"),
		group(appA, "bob", "g1", "c5", "second"),
	)
	// zed joins before dave; alice hands the group to bob, the earliest
	// joiner after her.
	mustJoin(t, s, appA, "g1", "zed")
	mustJoin(t, s, appA, "g1", "dave")
	if _, err := s.LeaveGroup(ctx, appA, "g1", "alice"); err != nil {
		t.Fatalf("LeaveGroup: %v", err)
	}
	mustSetAcked(t, s, appA, "alice", "laptop", direct1, 3)
	// Read cursors: bob's shared, dave's private; settings.
	mustSetRead(t, s, appA, "bob", direct1, 3, true)
	mustSetRead(t, s, appA, "dave", group1, 2, false)
	mustSetPrefs(t, s, appA, "alice", store.Prefs{HideReadReceipts: true})
	for range 2 {
		if _, err := s.NextEpoch(ctx, appA, "alice", "phone"); err != nil {
			t.Fatalf("NextEpoch: %v", err)
		}
	}
	// Outbox jobs: one as Append added it, one retried, one finished.
	pushConv := store.DirectConv("erin", "frank")
	pushed := mustAppend(t, s,
		withPush(direct(appA, "erin", "frank", "p1", "fresh"), at(time.Second)),
		withPush(direct(appA, "erin", "frank", "p2", "retried"), at(0)),
		withPush(direct(appA, "erin", "frank", "p3", "finished"), at(0)),
	)
	claimed := mustClaim(t, s, at(0), time.Minute, 10)
	if len(claimed) != 2 {
		t.Fatalf("claimed %d jobs, want 2", len(claimed))
	}
	retried := claimed[0]
	retried.Users, retried.Attempts, retried.Next = []string{"frank"}, 3, at(2*time.Second)
	mustRetry(t, s, retried)
	mustFinish(t, s, claimed[1].ID)

	wantDirect := mustMessages(t, s, appA, direct1, 0, 100)
	wantGroup := mustMessages(t, s, appA, group1, 0, 100)
	wantG, err := s.GetGroup(ctx, appA, "g1")
	if err != nil {
		t.Fatalf("GetGroup: %v", err)
	}
	maxID := max(wantDirect[len(wantDirect)-1].Id, wantGroup[len(wantGroup)-1].Id)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = open(t, dir)
	t.Cleanup(func() { closeStore(t, s) })

	for _, c := range []struct {
		conv string
		want []*qimpb.Message
	}{{direct1, wantDirect}, {group1, wantGroup}} {
		got := mustMessages(t, s, appA, c.conv, 0, 100)
		if len(got) != len(c.want) {
			t.Errorf("%s after reopen: %d messages, want %d", c.conv, len(got), len(c.want))
			continue
		}
		for i := range got {
			if !proto.Equal(got[i], c.want[i]) {
				t.Errorf("%s seq %d after reopen: %v, want %v", c.conv, i+1, got[i], c.want[i])
			}
		}
		if last := mustLastSeq(t, s, appA, c.conv); last != uint64(len(c.want)) {
			t.Errorf("LastSeq(%s) after reopen = %d, want %d", c.conv, last, len(c.want))
		}
	}
	if h := mustHistory(t, s, appA, direct1, 0, 2); !slices.Equal(seqs(h), []uint64{2, 3}) {
		t.Errorf("History after reopen: seqs %v, want [2 3]", seqs(h))
	}

	for _, tt := range []struct {
		user, device, conv string
		want               store.ConvState
	}{
		{"bob", "phone", direct1, store.ConvState{Conv: direct1, LastSeq: 3, Acked: 1, Read: 3, PeerDelivered: 3}},
		{"alice", "laptop", direct1, store.ConvState{Conv: direct1, LastSeq: 3, Acked: 3, Read: 3, PeerDelivered: 1, PeerRead: 3}},
		{"alice", "phone", direct1, store.ConvState{Conv: direct1, LastSeq: 3, Acked: 0, Read: 3, PeerDelivered: 1, PeerRead: 3}},
		{"bob", "phone", group1, store.ConvState{Conv: group1, LastSeq: 2, Acked: 1, Read: 2}},
		{"bob", "tablet", group1, store.ConvState{Conv: group1, LastSeq: 2, Acked: 0, Read: 2}},
		{"dave", "phone", group1, store.ConvState{Conv: group1, LastSeq: 2, Acked: 2, Read: 2}},
	} {
		if got := inboxConv(t, s, appA, tt.user, tt.device, tt.conv); got != tt.want {
			t.Errorf("Inbox(%s, %s) after reopen: %+v, want %+v", tt.user, tt.device, got, tt.want)
		}
	}
	if got, want := mustReceipts(t, s, appA, direct1, "alice", "bob"), []store.Receipt{{User: "alice", Delivered: 3}, {User: "bob", Delivered: 1, Read: 3}}; !slices.Equal(got, want) {
		t.Errorf("Receipts after reopen = %+v, want %+v", got, want)
	}
	if got := mustPrefs(t, s, appA, "alice"); !got.HideReadReceipts {
		t.Errorf("Prefs(alice) after reopen = %+v, want HideReadReceipts", got)
	}
	if got := mustContacts(t, s, appA, "alice"); !slices.Equal(got, []string{"bob"}) {
		t.Errorf("Contacts after reopen = %v", got)
	}
	if got := mustContactOf(t, s, appA, "bob", "bob", "alice"); !slices.Equal(got, []string{"alice"}) {
		t.Errorf("ContactOf(bob) after reopen = %v", got)
	}
	if got, err := s.GetGroup(ctx, appA, "g1"); err != nil || got != wantG {
		t.Errorf("GetGroup after reopen = %+v, %v; want %+v", got, err, wantG)
	}
	if got := mustMembers(t, s, appA, "g1"); !slices.Equal(got, []string{"bob", "dave", "zed"}) {
		t.Errorf("Members after reopen = %v", got)
	}
	if _, err := s.JoinGroup(ctx, appA, "g1", "carol", 0); !errors.Is(err, store.ErrBanned) {
		t.Errorf("JoinGroup of the banned carol after reopen: %v, want ErrBanned (ban lost?)", err)
	}
	if got := groupIDs(mustUserGroups(t, s, appA, "bob")); !slices.Equal(got, []string{"g1"}) {
		t.Errorf("UserGroups(bob) after reopen = %v", got)
	}
	// The join order survives: zed joined before dave.
	if newOwner, err := s.LeaveGroup(ctx, appA, "g1", "bob"); err != nil || newOwner != "zed" {
		t.Errorf("the owner leaves after reopen: new owner %q, %v; want zed", newOwner, err)
	}

	if n := mustBacklog(t, s); n != 2 {
		t.Errorf("PushBacklog after reopen = %d, want 2", n)
	}
	jobs := mustClaim(t, s, at(time.Hour), time.Minute, 10)
	if len(jobs) != 2 {
		t.Fatalf("outbox after reopen: %+v, want 2 jobs", jobs)
	}
	next := at(time.Hour + time.Minute)
	checkJob(t, "fresh job after reopen", jobs[0], store.PushJob{ID: jobs[0].ID, App: appA, Conv: pushConv, Seq: pushed[0].Msg.Seq, Next: next})
	checkJob(t, "retried job after reopen", jobs[1], store.PushJob{ID: retried.ID, App: appA, Conv: pushConv, Seq: pushed[1].Msg.Seq, Users: []string{"frank"}, Attempts: 3, Next: next})

	if e, err := s.NextEpoch(ctx, appA, "alice", "phone"); err != nil || e != 3 {
		t.Errorf("NextEpoch after reopen = %d, %v; want 3 (epochs lost?)", e, err)
	}

	// Deduplication survives the restart; seqs and ids continue.
	again := mustAppend(t, s,
		direct(appA, "alice", "bob", "c4", "retry"),
		direct(appA, "alice", "bob", "c6", "fourth"),
		group(appA, "alice", "g1", "c7", "third"),
	)
	if !again[0].Duplicate || !proto.Equal(again[0].Msg, res[0].Msg) {
		t.Errorf("retry after reopen: Duplicate %t, %v; want the original %v", again[0].Duplicate, again[0].Msg, res[0].Msg)
	}
	if again[1].Duplicate || again[1].Msg.Seq != 4 {
		t.Errorf("next direct message: seq %d, want 4", again[1].Msg.Seq)
	}
	if again[2].Duplicate || again[2].Msg.Seq != 3 {
		t.Errorf("next group message: seq %d, want 3", again[2].Msg.Seq)
	}
	if again[1].Msg.Id <= maxID || again[2].Msg.Id <= again[1].Msg.Id {
		t.Errorf("ids after reopen %d, %d; want above %d and increasing", again[1].Msg.Id, again[2].Msg.Id, maxID)
	}
}

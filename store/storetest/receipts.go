package storetest

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/qim-im/qim/store"
)

// Read cursors, receipts, settings and ContactOf.

func mustSetRead(t *testing.T, s store.Store, app, user, conv string, seq uint64, share bool) (read, shared uint64) {
	t.Helper()
	read, shared, err := s.SetRead(t.Context(), app, user, conv, seq, share)
	if err != nil {
		t.Fatalf("SetRead(%s, %s, %s, %d, %t): %v", app, user, conv, seq, share, err)
	}
	return read, shared
}

// checkSetRead calls SetRead and checks the cursors it returns.
func checkSetRead(t *testing.T, s store.Store, app, user, conv string, seq uint64, share bool, wantRead, wantShared uint64) {
	t.Helper()
	if read, shared := mustSetRead(t, s, app, user, conv, seq, share); read != wantRead || shared != wantShared {
		t.Errorf("SetRead(%s, %s, %d, share %t) = %d, %d; want %d, %d", user, conv, seq, share, read, shared, wantRead, wantShared)
	}
}

func mustReceipts(t *testing.T, s store.Store, app, conv string, users ...string) []store.Receipt {
	t.Helper()
	r, err := s.Receipts(t.Context(), app, conv, users)
	if err != nil {
		t.Fatalf("Receipts(%s, %s, %d users): %v", app, conv, len(users), err)
	}
	return r
}

func mustPrefs(t *testing.T, s store.Store, app, user string) store.Prefs {
	t.Helper()
	p, err := s.Prefs(t.Context(), app, user)
	if err != nil {
		t.Fatalf("Prefs(%s, %s): %v", app, user, err)
	}
	return p
}

func mustSetPrefs(t *testing.T, s store.Store, app, user string, p store.Prefs) {
	t.Helper()
	if err := s.SetPrefs(t.Context(), app, user, p); err != nil {
		t.Fatalf("SetPrefs(%s, %s): %v", app, user, err)
	}
}

func mustContactOf(t *testing.T, s store.Store, app, contact string, owners ...string) []string {
	t.Helper()
	got, err := s.ContactOf(t.Context(), app, contact, owners)
	if err != nil {
		t.Fatalf("ContactOf(%s, %s): %v", app, contact, err)
	}
	return got
}

func third[A, B any](_ A, _ B, err error) error { return err }

// checkInbox checks the state of conv in user's inbox on device.
func checkInbox(t *testing.T, s store.Store, app, user, device string, want store.ConvState) {
	t.Helper()
	if got := inboxConv(t, s, app, user, device, want.Conv); got != want {
		t.Errorf("Inbox(%s, %s): %+v, want %+v", user, device, got, want)
	}
}

// testSetRead checks that both read cursors only move forward, that the
// shared one moves only with share, and that cursors are per user and
// per conversation.
func testSetRead(t *testing.T, s store.Store) {
	conv := store.DirectConv("alice", "bob")
	for i := range 5 {
		mustAppend(t, s, direct(appA, "bob", "alice", fmt.Sprint("b", i), "x"))
	}
	for _, tt := range []struct {
		seq                  uint64
		share                bool
		wantRead, wantShared uint64
	}{
		{3, false, 3, 0},   // private only
		{2, true, 3, 2},    // the shared cursor moves, the private one stays
		{4, true, 4, 4},    // both move
		{1, true, 4, 4},    // neither moves back
		{0, false, 4, 4},   // nothing to move
		{5, false, 5, 4},   // private only again
		{4, true, 5, 4},    // at the shared cursor: no change
		{99, true, 99, 99}, // the store does not check seqs against LastSeq
	} {
		checkSetRead(t, s, appA, "alice", conv, tt.seq, tt.share, tt.wantRead, tt.wantShared)
		if got := inboxConv(t, s, appA, "alice", "phone", conv).Read; got != tt.wantRead {
			t.Errorf("after SetRead(%d, %t): Inbox(alice).Read = %d, want %d", tt.seq, tt.share, got, tt.wantRead)
		}
		if got := inboxConv(t, s, appA, "bob", "phone", conv).PeerRead; got != tt.wantShared {
			t.Errorf("after SetRead(%d, %t): Inbox(bob).PeerRead = %d, want %d", tt.seq, tt.share, got, tt.wantShared)
		}
		if got := mustReceipts(t, s, appA, conv, "alice")[0].Read; got != tt.wantShared {
			t.Errorf("after SetRead(%d, %t): Receipts(alice).Read = %d, want %d", tt.seq, tt.share, got, tt.wantShared)
		}
	}
	// Bob's cursors, and alice's of another conversation, did not move.
	checkInbox(t, s, appA, "bob", "phone", store.ConvState{Conv: conv, LastSeq: 5, Read: 5, PeerRead: 99})
	checkSetRead(t, s, appA, "bob", conv, 0, false, 5, 0)
	checkSetRead(t, s, appA, "alice", store.DirectConv("alice", "carol"), 0, false, 0, 0)
	// A user whose id starts with alice's has cursors of its own.
	checkSetRead(t, s, appA, "alic", conv, 0, false, 0, 0)
}

// testAppendRead checks that Append moves the sender's read cursor, not
// its shared one nor anyone else's, to the sender's message, and that a
// duplicate moves nothing.
func testAppendRead(t *testing.T, s store.Store) {
	conv := store.DirectConv("alice", "bob")
	mustAppend(t, s, direct(appA, "alice", "bob", "a1", "seq 1"))
	checkInbox(t, s, appA, "alice", "phone", store.ConvState{Conv: conv, LastSeq: 1, Read: 1})
	checkInbox(t, s, appA, "bob", "phone", store.ConvState{Conv: conv, LastSeq: 1})
	if got := mustReceipts(t, s, appA, conv, "alice"); got[0] != (store.Receipt{User: "alice"}) {
		t.Errorf("Receipts(alice) after her message: %+v, want zeros (not shared)", got[0])
	}
	checkSetRead(t, s, appA, "alice", conv, 0, false, 1, 0)

	mustAppend(t, s, direct(appA, "bob", "alice", "b2", "seq 2"))
	// A retry of alice's first message is a duplicate: her cursor stays.
	if res := mustAppend(t, s, direct(appA, "alice", "bob", "a1", "retry")); !res[0].Duplicate {
		t.Fatal("retry: not a duplicate")
	}
	checkInbox(t, s, appA, "alice", "phone", store.ConvState{Conv: conv, LastSeq: 2, Read: 1})
	checkInbox(t, s, appA, "bob", "phone", store.ConvState{Conv: conv, LastSeq: 2, Read: 2})

	// One call: each sender's cursor moves to its last message; a
	// duplicate within the call (a5 again) changes nothing; a group
	// message of the same call moves alice's cursor of the group.
	mustCreateGroup(t, s, appA, "g1", "alice")
	mustAppend(t, s,
		direct(appA, "alice", "bob", "a3", "seq 3"),
		direct(appA, "bob", "alice", "b4", "seq 4"),
		group(appA, "alice", "g1", "ag1", "g seq 1"),
		direct(appA, "alice", "bob", "a5", "seq 5"),
		direct(appA, "bob", "alice", "b6", "seq 6"),
		direct(appA, "alice", "bob", "a5", "seq 5 again"),
	)
	checkInbox(t, s, appA, "alice", "phone", store.ConvState{Conv: conv, LastSeq: 6, Read: 5})
	checkInbox(t, s, appA, "bob", "phone", store.ConvState{Conv: conv, LastSeq: 6, Read: 6})
	checkInbox(t, s, appA, "alice", "phone", store.ConvState{Conv: store.GroupConv("g1"), LastSeq: 1, Read: 1})
	checkSetRead(t, s, appA, "alice", conv, 0, false, 5, 0)

	// A read cursor beyond the new message stays where it is.
	checkSetRead(t, s, appA, "bob", conv, 9, false, 9, 0)
	mustAppend(t, s, direct(appA, "bob", "alice", "b7", "seq 7"))
	checkInbox(t, s, appA, "bob", "phone", store.ConvState{Conv: conv, LastSeq: 7, Read: 9})
	checkSetRead(t, s, appA, "bob", conv, 0, false, 9, 0)
}

// testReceipts checks Receipts: Delivered is the furthest cursor among a
// user's devices of that conversation (cursors of other conversations,
// other apps and users whose ids start with the user's do not count, nor
// does a group's join point), Read the shared read cursor; the result
// keeps the users' order, duplicates included.
func testReceipts(t *testing.T, s store.Store) {
	conv := store.GroupConv("g1")
	mustCreateGroup(t, s, appA, "g1", "alice")
	for i := range 3 {
		mustAppend(t, s, group(appA, "alice", "g1", fmt.Sprint("a", i), "x"))
	}
	mustJoin(t, s, appA, "g1", "bob") // join point 3
	mustJoin(t, s, appA, "g1", "carol")
	// alice's furthest device sorts last.
	mustSetAcked(t, s, appA, "alice", "laptop", conv, 2)
	mustSetAcked(t, s, appA, "alice", "phone", conv, 3)
	mustSetAcked(t, s, appA, "alice", "tablet", "g:g2", 7)
	mustSetAcked(t, s, appA, "carol", "phone", conv, 1)
	mustSetAcked(t, s, appA, "carol", "tablet", "g:g2", 9)
	mustSetAcked(t, s, appA, "carol", "watch", conv+"0", 8)
	mustSetAcked(t, s, appA, "carolx", "phone", conv, 6)
	mustSetAcked(t, s, appB, "bob", "phone", conv, 5)
	mustSetRead(t, s, appA, "carol", conv, 2, true)
	mustSetRead(t, s, appA, "bob", conv, 3, false)
	mustSetRead(t, s, appA, "alice", conv+"0", 4, true)
	mustSetRead(t, s, appB, "bob", conv, 3, true)

	got := mustReceipts(t, s, appA, conv, "carol", "nobody", "alice", "bob", "caro", "carol")
	want := []store.Receipt{
		{User: "carol", Delivered: 1, Read: 2},
		{User: "nobody"},
		{User: "alice", Delivered: 3},
		{User: "bob"}, // joined at 3, acknowledged nothing, read privately
		{User: "caro"},
		{User: "carol", Delivered: 1, Read: 2},
	}
	if !slices.Equal(got, want) {
		t.Errorf("Receipts(g1) =\n%+v, want\n%+v", got, want)
	}
	if got := mustReceipts(t, s, appA, "g:g2", "carol"); !slices.Equal(got, []store.Receipt{{User: "carol", Delivered: 9}}) {
		t.Errorf("Receipts(g2, carol) = %+v", got)
	}
	if got := mustReceipts(t, s, appA, conv); len(got) != 0 {
		t.Errorf("Receipts of no users = %+v", got)
	}

	// Many users in one call, most of them without any state.
	const n = 3000
	users := make([]string, n)
	for i := range users {
		users[i] = fmt.Sprintf("m%04d", n-i) // not sorted
	}
	for i := 0; i < n; i += 100 {
		mustSetAcked(t, s, appA, users[i], "phone", conv, uint64(i+1))
		mustSetRead(t, s, appA, users[i], conv, uint64(i+2), i%200 == 0)
	}
	got = mustReceipts(t, s, appA, conv, users...)
	if len(got) != n {
		t.Fatalf("Receipts of %d users: %d receipts", n, len(got))
	}
	for i, r := range got {
		want := store.Receipt{User: users[i]}
		if i%100 == 0 {
			want.Delivered = uint64(i + 1)
		}
		if i%200 == 0 {
			want.Read = uint64(i + 2)
		}
		if r != want {
			t.Fatalf("Receipts of %d users: receipt %d = %+v, want %+v", n, i, r, want)
		}
	}
}

// testInboxReceipts checks the read and peer cursors of Inbox: for a 1:1
// conversation, the other user's delivered and shared read cursors; for a
// conversation with oneself and for a group, none.
func testInboxReceipts(t *testing.T, s store.Store) {
	conv := store.DirectConv("alice", "bob")
	mustAppend(t, s,
		direct(appA, "alice", "bob", "a1", "1"),
		direct(appA, "alice", "bob", "a2", "2"),
		direct(appA, "bob", "alice", "b3", "3"),
	)
	checkInbox(t, s, appA, "alice", "phone", store.ConvState{Conv: conv, LastSeq: 3, Read: 2})
	checkInbox(t, s, appA, "bob", "phone", store.ConvState{Conv: conv, LastSeq: 3, Read: 3})

	mustSetAcked(t, s, appA, "bob", "phone", conv, 2)
	mustSetAcked(t, s, appA, "bob", "watch", conv, 1) // sorts after his furthest
	mustSetRead(t, s, appA, "bob", conv, 2, false)    // below his own message
	checkInbox(t, s, appA, "alice", "phone", store.ConvState{Conv: conv, LastSeq: 3, Read: 2, PeerDelivered: 2})
	checkInbox(t, s, appA, "bob", "phone", store.ConvState{Conv: conv, LastSeq: 3, Acked: 2, Read: 3})

	mustSetRead(t, s, appA, "alice", conv, 3, true)
	mustSetAcked(t, s, appA, "alice", "tablet", conv, 3)
	mustSetRead(t, s, appA, "bob", conv, 3, true)
	checkInbox(t, s, appA, "alice", "phone", store.ConvState{Conv: conv, LastSeq: 3, Read: 3, PeerDelivered: 2, PeerRead: 3})
	checkInbox(t, s, appA, "alice", "tablet", store.ConvState{Conv: conv, LastSeq: 3, Acked: 3, Read: 3, PeerDelivered: 2, PeerRead: 3})
	checkInbox(t, s, appA, "bob", "watch", store.ConvState{Conv: conv, LastSeq: 3, Acked: 1, Read: 3, PeerDelivered: 3, PeerRead: 3})

	// A conversation with oneself has no peer.
	self := store.DirectConv("alice", "alice")
	mustAppend(t, s, store.Append{App: appA, Conv: self, Members: []string{"alice"},
		Msg: direct(appA, "alice", "alice", "s1", "note").Msg})
	mustSetAcked(t, s, appA, "alice", "phone", self, 1)
	mustSetRead(t, s, appA, "alice", self, 1, true)
	checkInbox(t, s, appA, "alice", "phone", store.ConvState{Conv: self, LastSeq: 1, Acked: 1, Read: 1})

	// Nor has a group.
	g := store.GroupConv("g1")
	mustCreateGroup(t, s, appA, "g1", "alice")
	mustJoin(t, s, appA, "g1", "bob")
	mustAppend(t, s, group(appA, "bob", "g1", "bg1", "1"), group(appA, "alice", "g1", "ag2", "2"))
	mustSetAcked(t, s, appA, "bob", "phone", g, 2)
	mustSetRead(t, s, appA, "bob", g, 2, true)
	checkInbox(t, s, appA, "alice", "phone", store.ConvState{Conv: g, LastSeq: 2, Read: 2})
	checkInbox(t, s, appA, "bob", "phone", store.ConvState{Conv: g, LastSeq: 2, Acked: 2, Read: 2})
	checkInbox(t, s, appA, "bob", "laptop", store.ConvState{Conv: g, LastSeq: 2, Read: 2})
}

// testPrefs checks that settings are stored per user and app, and that a
// user who never stored any has the zero Prefs.
func testPrefs(t *testing.T, s store.Store) {
	if got := mustPrefs(t, s, appA, "alice"); got != (store.Prefs{}) {
		t.Errorf("Prefs of a new user = %+v", got)
	}
	mustSetPrefs(t, s, appA, "alice", store.Prefs{HideReadReceipts: true})
	if got := mustPrefs(t, s, appA, "alice"); !got.HideReadReceipts {
		t.Errorf("Prefs after SetPrefs(hide) = %+v", got)
	}
	for _, other := range []struct{ app, user string }{{appA, "bob"}, {appA, "alic"}, {appA, "alice2"}, {appB, "alice"}} {
		if got := mustPrefs(t, s, other.app, other.user); got != (store.Prefs{}) {
			t.Errorf("Prefs(%s, %s) = %+v, want zero", other.app, other.user, got)
		}
	}
	mustSetPrefs(t, s, appA, "alice", store.Prefs{})
	if got := mustPrefs(t, s, appA, "alice"); got != (store.Prefs{}) {
		t.Errorf("Prefs after SetPrefs(zero) = %+v", got)
	}
}

// testContactOf checks that ContactOf returns the owners whose list holds
// the contact, in the order given.
func testContactOf(t *testing.T, s store.Store) {
	ctx := t.Context()
	for _, c := range []struct{ owner, contact string }{
		{"alice", "bob"}, {"carol", "bob"}, {"dave", "bobby"}, {"dave", "bo"}, {"erin", "bob"}, {"zed", "alice"},
	} {
		if err := s.AddContact(ctx, appA, c.owner, c.contact); err != nil {
			t.Fatalf("AddContact: %v", err)
		}
	}
	if err := s.RemoveContact(ctx, appA, "erin", "bob"); err != nil {
		t.Fatalf("RemoveContact: %v", err)
	}
	if err := s.AddContact(ctx, appB, "frank", "bob"); err != nil {
		t.Fatalf("AddContact: %v", err)
	}
	owners := []string{"dave", "carol", "zed", "alice", "erin", "frank", "carol", "bob"}
	if got, want := mustContactOf(t, s, appA, "bob", owners...), []string{"carol", "alice", "carol"}; !slices.Equal(got, want) {
		t.Errorf("ContactOf(bob, %v) = %v, want %v", owners, got, want)
	}
	if got := mustContactOf(t, s, appA, "bob"); len(got) != 0 {
		t.Errorf("ContactOf(bob) of no owners = %v", got)
	}
	if got := mustContactOf(t, s, appB, "bob", owners...); !slices.Equal(got, []string{"frank"}) {
		t.Errorf("ContactOf(bob) in app B = %v, want [frank]", got)
	}
}

// testReceiptsIsolation checks that read cursors, receipts, settings and
// contacts written under one app are invisible under another.
func testReceiptsIsolation(t *testing.T, s store.Store) {
	conv := store.DirectConv("alice", "bob")
	mustAppend(t, s, direct(appA, "alice", "bob", "1", "x"), direct(appA, "bob", "alice", "2", "y"))
	mustSetAcked(t, s, appA, "bob", "phone", conv, 2)
	mustSetRead(t, s, appA, "bob", conv, 2, true)
	mustSetPrefs(t, s, appA, "bob", store.Prefs{HideReadReceipts: true})
	if err := s.AddContact(t.Context(), appA, "bob", "alice"); err != nil {
		t.Fatalf("AddContact: %v", err)
	}

	if got := mustReceipts(t, s, appB, conv, "alice", "bob"); !slices.Equal(got, []store.Receipt{{User: "alice"}, {User: "bob"}}) {
		t.Errorf("Receipts in app B = %+v, want zeros", got)
	}
	if got := mustPrefs(t, s, appB, "bob"); got != (store.Prefs{}) {
		t.Errorf("Prefs in app B = %+v", got)
	}
	if got := mustContactOf(t, s, appB, "alice", "bob"); len(got) != 0 {
		t.Errorf("ContactOf in app B = %v", got)
	}
	// The same conversation in app B starts from nothing.
	mustAppend(t, s, direct(appB, "alice", "bob", "1", "x"))
	checkInbox(t, s, appB, "alice", "phone", store.ConvState{Conv: conv, LastSeq: 1, Read: 1})
	checkInbox(t, s, appB, "bob", "phone", store.ConvState{Conv: conv, LastSeq: 1})
	checkSetRead(t, s, appB, "bob", conv, 1, false, 1, 0)
	// And app A is unchanged.
	checkInbox(t, s, appA, "alice", "phone", store.ConvState{Conv: conv, LastSeq: 2, Read: 1, PeerDelivered: 2, PeerRead: 2})
}

// testReadConcurrent moves one user's read cursors from several goroutines
// at once, while the user appends to the conversation and a reader
// watches: no call and no reader ever sees a cursor move back, each call
// returns cursors at least at its seq, and the cursors end at the largest
// seq given (and, for the read cursor, the user's last message).
func testReadConcurrent(t *testing.T, s store.Store) {
	const (
		writers = 8
		calls   = 50
		msgs    = 30
	)
	conv := store.DirectConv("alice", "bob")
	// The seqs grow with i, so that the cursors keep moving while the
	// goroutines race, and calls running at once have different seqs.
	seqOf := func(g, i int) uint64 { return uint64(1 + i*writers + (g*3)%writers) }
	var wantRead, wantShared uint64 = msgs, 0
	for g := range writers {
		for i := range calls {
			wantRead = max(wantRead, seqOf(g, i))
			if (g+i)%2 == 0 {
				wantShared = max(wantShared, seqOf(g, i))
			}
		}
	}

	stop := make(chan struct{})
	var watcher sync.WaitGroup
	watcher.Go(func() {
		var read, peerRead, shared uint64
		for {
			select {
			case <-stop:
				return
			default:
			}
			inbox, err := s.Inbox(t.Context(), appA, "alice", "phone")
			if err != nil {
				t.Errorf("Inbox(alice): %v", err)
				return
			}
			for _, c := range inbox {
				if c.Conv == conv {
					if c.Read < read {
						t.Errorf("Inbox(alice).Read went back from %d to %d", read, c.Read)
					}
					read = c.Read
				}
			}
			inbox, err = s.Inbox(t.Context(), appA, "bob", "phone")
			if err != nil {
				t.Errorf("Inbox(bob): %v", err)
				return
			}
			for _, c := range inbox {
				if c.Conv == conv {
					if c.PeerRead < peerRead {
						t.Errorf("Inbox(bob).PeerRead went back from %d to %d", peerRead, c.PeerRead)
					}
					peerRead = c.PeerRead
				}
			}
			r, err := s.Receipts(t.Context(), appA, conv, []string{"alice"})
			if err != nil {
				t.Errorf("Receipts: %v", err)
				return
			}
			if r[0].Read < shared {
				t.Errorf("Receipts(alice).Read went back from %d to %d", shared, r[0].Read)
			}
			shared = r[0].Read
		}
	})

	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range msgs {
			if _, err := s.Append(t.Context(), []store.Append{direct(appA, "alice", "bob", fmt.Sprint("m", i), "x")}); err != nil {
				t.Errorf("Append: %v", err)
				return
			}
		}
	})
	for g := range writers {
		wg.Go(func() {
			var lastRead, lastShared uint64
			for i := range calls {
				seq, share := seqOf(g, i), (g+i)%2 == 0
				read, shared, err := s.SetRead(t.Context(), appA, "alice", conv, seq, share)
				if err != nil {
					t.Errorf("SetRead: %v", err)
					return
				}
				if read < max(seq, lastRead) || shared < lastShared || (share && shared < seq) {
					t.Errorf("writer %d: SetRead(%d, %t) = %d, %d after %d, %d", g, seq, share, read, shared, lastRead, lastShared)
				}
				lastRead, lastShared = read, shared
			}
		})
	}
	wg.Wait()
	close(stop)
	watcher.Wait()

	checkSetRead(t, s, appA, "alice", conv, 0, false, wantRead, wantShared)
	checkInbox(t, s, appA, "bob", "phone", store.ConvState{Conv: conv, LastSeq: msgs, PeerRead: wantShared})
}

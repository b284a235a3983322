package storetest

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/store"
)

func testAppendSeqs(t *testing.T, s store.Store) {
	ab, ac := store.DirectConv("alice", "bob"), store.DirectConv("alice", "carol")
	gc := store.GroupConv("g1")
	mustCreateGroup(t, s, appA, "g1", "alice")

	start := time.Now().UnixMilli()
	res1 := mustAppend(t, s,
		direct(appA, "alice", "bob", "1", "ab1"),
		direct(appA, "carol", "alice", "2", "ac1"),
		direct(appA, "bob", "alice", "3", "ab2"),
		group(appA, "alice", "g1", "4", "g1"),
		direct(appA, "alice", "carol", "5", "ac2"),
		direct(appA, "alice", "bob", "", "ab3"),
	)
	res2 := mustAppend(t, s,
		direct(appA, "alice", "carol", "6", "ac3"),
		direct(appA, "alice", "bob", "7", "ab4"),
		group(appA, "bob", "g1", "8", "g2"),
	)
	end := time.Now().UnixMilli()

	res := append(res1, res2...)
	wantConv := []string{ab, ac, ab, gc, ac, ab, ac, ab, gc}
	wantSeq := []uint64{1, 1, 2, 1, 2, 3, 3, 4, 2}
	var lastID uint64
	for i, r := range res {
		m := r.Msg
		if r.Duplicate {
			t.Errorf("result %d: Duplicate", i)
		}
		if m.Seq != wantSeq[i] {
			t.Errorf("result %d (%s): seq %d, want %d", i, wantConv[i], m.Seq, wantSeq[i])
		}
		if m.Id <= lastID {
			t.Errorf("result %d: id %d not above previous %d", i, m.Id, lastID)
		}
		lastID = m.Id
		if m.Timestamp < start || m.Timestamp > end {
			t.Errorf("result %d: timestamp %d outside [%d, %d]", i, m.Timestamp, start, end)
		}
	}

	for conv, want := range map[string][]string{
		ab: {"ab1", "ab2", "ab3", "ab4"},
		ac: {"ac1", "ac2", "ac3"},
		gc: {"g1", "g2"},
	} {
		msgs := mustMessages(t, s, appA, conv, 0, 100)
		checkSeqs(t, conv, msgs, span(1, uint64(len(want))))
		var got []string
		for _, m := range msgs {
			got = append(got, text(t, m))
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: texts %q, want %q", conv, got, want)
		}
		if last := mustLastSeq(t, s, appA, conv); last != uint64(len(want)) {
			t.Errorf("LastSeq(%s) = %d, want %d", conv, last, len(want))
		}
	}
	// What is read back is what Append returned.
	for i, r := range res {
		msgs := mustMessages(t, s, appA, wantConv[i], r.Msg.Seq-1, 1)
		if len(msgs) != 1 || !proto.Equal(msgs[0], r.Msg) {
			t.Errorf("result %d: stored %v, returned %v", i, msgs, r.Msg)
		}
	}
}

func testDedupAcrossCalls(t *testing.T, s store.Store) {
	conv := store.DirectConv("alice", "bob")
	first := mustAppend(t, s, direct(appA, "alice", "bob", "c1", "original"))[0]

	again := mustAppend(t, s, direct(appA, "alice", "bob", "c1", "retry"))[0]
	if !again.Duplicate {
		t.Fatal("second Append of c1: not Duplicate")
	}
	if !proto.Equal(again.Msg, first.Msg) {
		t.Errorf("duplicate result %v, want the original %v", again.Msg, first.Msg)
	}
	if got := mustLastSeq(t, s, appA, conv); got != 1 {
		t.Errorf("LastSeq after duplicate = %d, want 1", got)
	}

	next := mustAppend(t, s, direct(appA, "alice", "bob", "c2", "next"))[0]
	if next.Duplicate || next.Msg.Seq != 2 {
		t.Errorf("next message: seq %d, Duplicate %t; want seq 2", next.Msg.Seq, next.Duplicate)
	}
	msgs := mustMessages(t, s, appA, conv, 0, 100)
	checkSeqs(t, "messages", msgs, span(1, 2))
	if len(msgs) > 0 && text(t, msgs[0]) != "original" {
		t.Errorf("seq 1 text %q, want %q", text(t, msgs[0]), "original")
	}

	// A duplicate in a call with new messages, and a call of duplicates only.
	res := mustAppend(t, s,
		direct(appA, "alice", "bob", "c3", "new"),
		direct(appA, "alice", "bob", "c2", "retry"),
	)
	if res[0].Duplicate || res[0].Msg.Seq != 3 {
		t.Errorf("c3: seq %d, Duplicate %t; want seq 3", res[0].Msg.Seq, res[0].Duplicate)
	}
	if !res[1].Duplicate || res[1].Msg.Seq != 2 || res[1].Msg.Id != next.Msg.Id {
		t.Errorf("c2 retry: seq %d id %d Duplicate %t; want seq 2 id %d", res[1].Msg.Seq, res[1].Msg.Id, res[1].Duplicate, next.Msg.Id)
	}
	res = mustAppend(t, s, direct(appA, "alice", "bob", "c1", "r"), direct(appA, "alice", "bob", "c3", "r"))
	if !res[0].Duplicate || !res[1].Duplicate || res[0].Msg.Seq != 1 || res[1].Msg.Seq != 3 {
		t.Errorf("all-duplicate call: got %v", res)
	}
	if got := mustLastSeq(t, s, appA, conv); got != 3 {
		t.Errorf("LastSeq = %d, want 3", got)
	}
}

func testDedupWithinCall(t *testing.T, s store.Store) {
	conv := store.DirectConv("alice", "bob")
	res := mustAppend(t, s,
		direct(appA, "alice", "bob", "x", "first"),
		direct(appA, "alice", "bob", "x", "second"),
		direct(appA, "alice", "bob", "y", "third"),
		direct(appA, "alice", "bob", "x", "fourth"),
	)
	if res[0].Duplicate || res[2].Duplicate {
		t.Errorf("first occurrences marked Duplicate: %t, %t", res[0].Duplicate, res[2].Duplicate)
	}
	for _, i := range []int{1, 3} {
		if !res[i].Duplicate {
			t.Errorf("result %d: not Duplicate", i)
		}
		if !proto.Equal(res[i].Msg, res[0].Msg) {
			t.Errorf("result %d: %v, want the original %v", i, res[i].Msg, res[0].Msg)
		}
	}
	if res[2].Msg.Seq != 2 {
		t.Errorf("y: seq %d, want 2 (a duplicate must not consume a seq)", res[2].Msg.Seq)
	}
	msgs := mustMessages(t, s, appA, conv, 0, 100)
	checkSeqs(t, "messages", msgs, span(1, 2))
	if len(msgs) == 2 && (text(t, msgs[0]) != "first" || text(t, msgs[1]) != "third") {
		t.Errorf("texts %q, %q; want first, third", text(t, msgs[0]), text(t, msgs[1]))
	}
}

func testDedupScope(t *testing.T, s store.Store) {
	// An empty ClientMsgId is never a duplicate, within a call or across.
	res := mustAppend(t, s, direct(appA, "alice", "bob", "", "a"), direct(appA, "alice", "bob", "", "b"))
	res = append(res, mustAppend(t, s, direct(appA, "alice", "bob", "", "c"))...)
	for i, r := range res {
		if r.Duplicate || r.Msg.Seq != uint64(i+1) {
			t.Errorf("empty id %d: seq %d, Duplicate %t", i, r.Msg.Seq, r.Duplicate)
		}
	}

	// The same ClientMsgId from another user, or in another app, is new.
	mustAppend(t, s, direct(appA, "alice", "bob", "same", "from alice"))
	r := mustAppend(t, s, direct(appA, "bob", "alice", "same", "from bob"))[0]
	if r.Duplicate {
		t.Error("same id from another user: Duplicate")
	}
	r = mustAppend(t, s, direct(appB, "alice", "bob", "same", "other app"))[0]
	if r.Duplicate || r.Msg.Seq != 1 {
		t.Errorf("same id in another app: seq %d, Duplicate %t; want seq 1", r.Msg.Seq, r.Duplicate)
	}
	if got := mustLastSeq(t, s, appA, store.DirectConv("alice", "bob")); got != 5 {
		t.Errorf("LastSeq = %d, want 5", got)
	}

	// The key is (App, FromUser, ClientMsgId): the same id from the same
	// user in another conversation is a duplicate of the first.
	r = mustAppend(t, s, direct(appA, "alice", "carol", "same", "to carol"))[0]
	if !r.Duplicate || r.Msg.ToUser != "bob" {
		t.Errorf("same id and user, other conversation: Duplicate %t, to %q; want the message to bob", r.Duplicate, r.Msg.ToUser)
	}
	if got := mustLastSeq(t, s, appA, store.DirectConv("alice", "carol")); got != 0 {
		t.Errorf("LastSeq(alice, carol) = %d, want 0", got)
	}
}

// appendN appends n messages to the 1:1 conversation of alice and bob.
func appendN(t *testing.T, s store.Store, app string, n int) string {
	t.Helper()
	var msgs []store.Append
	for i := range n {
		msgs = append(msgs, direct(app, "alice", "bob", fmt.Sprint("m", i), fmt.Sprint(i+1)))
	}
	mustAppend(t, s, msgs...)
	return store.DirectConv("alice", "bob")
}

func testMessages(t *testing.T, s store.Store) {
	conv := appendN(t, s, appA, 10)
	for _, tt := range []struct {
		after uint64
		limit int
		want  []uint64
	}{
		{0, 3, span(1, 3)},
		{3, 3, span(4, 6)},
		{9, 5, span(10, 10)},
		{10, 5, span(1, 0)},
		{50, 5, span(1, 0)},
		{0, 100, span(1, 10)},
	} {
		msgs := mustMessages(t, s, appA, conv, tt.after, tt.limit)
		checkSeqs(t, fmt.Sprintf("Messages(after %d, limit %d)", tt.after, tt.limit), msgs, tt.want)
	}
	if msgs := mustMessages(t, s, appA, "u:nobody:noone", 0, 10); len(msgs) != 0 {
		t.Errorf("unknown conversation: %d messages", len(msgs))
	}
	if got := mustLastSeq(t, s, appA, "u:nobody:noone"); got != 0 {
		t.Errorf("LastSeq(unknown) = %d, want 0", got)
	}
}

func testHistory(t *testing.T, s store.Store) {
	conv := appendN(t, s, appA, 10)
	for _, tt := range []struct {
		before uint64
		limit  int
		want   []uint64
	}{
		{0, 3, span(8, 10)},
		{8, 3, span(5, 7)},
		{3, 5, span(1, 2)},
		{1, 5, span(1, 0)},
		{11, 2, span(9, 10)},
		{100, 3, span(8, 10)},
		{0, 100, span(1, 10)},
	} {
		msgs := mustHistory(t, s, appA, conv, tt.before, tt.limit)
		checkSeqs(t, fmt.Sprintf("History(before %d, limit %d)", tt.before, tt.limit), msgs, tt.want)
	}
	if msgs := mustHistory(t, s, appA, "g:nogroup", 0, 10); len(msgs) != 0 {
		t.Errorf("unknown conversation: %d messages", len(msgs))
	}
}

// testConcurrentAppend appends from 32 goroutines to 4 conversations while
// other goroutines read, and checks that seqs are dense and ids unique.
// Run it with -race.
func testConcurrentAppend(t *testing.T, s store.Store) {
	const (
		writers = 32
		perG    = 20
		convs   = 4
	)
	conv := func(g int) (from, to string) { return fmt.Sprint("u", g%convs), "peer" }

	stop := make(chan struct{})
	var readers sync.WaitGroup
	for r := range convs {
		readers.Go(func() {
			from, to := conv(r)
			c := store.DirectConv(from, to)
			for {
				select {
				case <-stop:
					return
				default:
				}
				// A reader never sees a gap, nor a seq beyond LastSeq.
				last, err := s.LastSeq(t.Context(), appA, c)
				if err != nil {
					t.Errorf("LastSeq: %v", err)
					return
				}
				msgs, err := s.Messages(t.Context(), appA, c, 0, 1000)
				if err != nil {
					t.Errorf("Messages: %v", err)
					return
				}
				for i, m := range msgs {
					if m.Seq != uint64(i+1) {
						t.Errorf("reader: message %d has seq %d", i, m.Seq)
						return
					}
				}
				if uint64(len(msgs)) < last {
					t.Errorf("reader: LastSeq %d but %d messages", last, len(msgs))
					return
				}
				if _, err := s.Inbox(t.Context(), appA, from, "phone"); err != nil {
					t.Errorf("Inbox: %v", err)
					return
				}
			}
		})
	}

	results := make([][]store.AppendResult, writers)
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			from, to := conv(g)
			for i, call := 0, 0; i < perG; call++ {
				// Alternate single messages and pairs.
				n := min(1+call%2, perG-i)
				var msgs []store.Append
				for j := range n {
					msgs = append(msgs, direct(appA, from, to, fmt.Sprintf("g%d-%d", g, i+j), "x"))
				}
				res, err := s.Append(t.Context(), msgs)
				if err != nil {
					t.Errorf("writer %d: Append: %v", g, err)
					return
				}
				results[g] = append(results[g], res...)
				i += n
			}
		})
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	if t.Failed() {
		return
	}

	ids := make(map[uint64]bool)
	bySeq := make(map[string]map[uint64]bool)
	for g, res := range results {
		from, to := conv(g)
		c := store.DirectConv(from, to)
		if bySeq[c] == nil {
			bySeq[c] = make(map[uint64]bool)
		}
		var prevID, prevSeq uint64
		for _, r := range res {
			m := r.Msg
			if r.Duplicate {
				t.Errorf("writer %d: unexpected Duplicate", g)
			}
			if ids[m.Id] {
				t.Errorf("id %d given twice", m.Id)
			}
			ids[m.Id] = true
			if bySeq[c][m.Seq] {
				t.Errorf("%s: seq %d given twice", c, m.Seq)
			}
			bySeq[c][m.Seq] = true
			if m.Id <= prevID || m.Seq <= prevSeq {
				t.Errorf("writer %d: id %d seq %d after id %d seq %d", g, m.Id, m.Seq, prevID, prevSeq)
			}
			prevID, prevSeq = m.Id, m.Seq
		}
	}
	want := uint64(writers / convs * perG)
	for c, seen := range bySeq {
		if uint64(len(seen)) != want {
			t.Errorf("%s: %d seqs, want %d", c, len(seen), want)
		}
		if got := mustLastSeq(t, s, appA, c); got != want {
			t.Errorf("LastSeq(%s) = %d, want %d", c, got, want)
		}
		checkSeqs(t, c, mustMessages(t, s, appA, c, 0, int(want)+10), span(1, want))
	}
	// Every message of a conversation is its sender's: the sender's read
	// cursor is at the last, whatever order the Appends ran in.
	for g := range convs {
		from, to := conv(g)
		c := store.DirectConv(from, to)
		if got := inboxConv(t, s, appA, from, "phone", c).Read; got != want {
			t.Errorf("Inbox(%s) of %s: Read %d, want %d", from, c, got, want)
		}
	}
}

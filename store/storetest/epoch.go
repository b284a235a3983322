package storetest

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/qim-im/qim/store"
)

// testNextEpoch checks that epochs count per device, from 1, that Epoch
// reads the current one, and that concurrent calls get distinct values.
func testNextEpoch(t *testing.T, s store.Store) {
	ctx := t.Context()
	next := func(app, user, device string) uint64 {
		t.Helper()
		e, err := s.NextEpoch(ctx, app, user, device)
		if err != nil {
			t.Fatalf("NextEpoch(%s, %s, %s): %v", app, user, device, err)
		}
		return e
	}
	epoch := func(app, user, device string) uint64 {
		t.Helper()
		e, err := s.Epoch(ctx, app, user, device)
		if err != nil {
			t.Fatalf("Epoch(%s, %s, %s): %v", app, user, device, err)
		}
		return e
	}
	if got := epoch(appA, "alice", "phone"); got != 0 {
		t.Fatalf("epoch of a device that never connected: %d, want 0", got)
	}
	for i, want := range []uint64{1, 2, 3} {
		if got := next(appA, "alice", "phone"); got != want {
			t.Fatalf("call %d: epoch %d, want %d", i+1, got, want)
		}
		if got := epoch(appA, "alice", "phone"); got != want {
			t.Fatalf("after call %d: Epoch %d, want %d", i+1, got, want)
		}
	}
	// Other devices, users and apps have their own count.
	for _, k := range [][3]string{{appA, "alice", "laptop"}, {appA, "bob", "phone"}, {appB, "alice", "phone"}} {
		if got := next(k[0], k[1], k[2]); got != 1 {
			t.Errorf("%v: first epoch %d, want 1", k, got)
		}
	}

	const n = 50
	got := make([]uint64, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			e, err := s.NextEpoch(ctx, appA, "carol", "phone")
			if err != nil {
				t.Errorf("NextEpoch: %v", err)
			}
			got[i] = e
		})
	}
	wg.Wait()
	slices.Sort(got)
	for i, e := range got {
		if e != uint64(i+1) {
			t.Fatalf("concurrent epochs %v, want 1..%d each once", got, n)
		}
	}
}

// testPruneDedup checks that pruning forgets only entries older than its
// bound, and that messages stay.
func testPruneDedup(t *testing.T, s store.Store) {
	ctx := t.Context()
	conv := store.DirectConv("alice", "bob")
	first := mustAppend(t, s, direct(appA, "alice", "bob", "c1", "original"))[0]
	mustAppend(t, s, direct(appB, "alice", "bob", "c1", "other app"))
	stored := time.UnixMilli(first.Msg.Timestamp)

	if n, err := s.PruneDedup(ctx, stored.Add(-time.Hour)); err != nil || n != 0 {
		t.Fatalf("PruneDedup(an hour before): %d, %v; want 0, nil", n, err)
	}
	if r := mustAppend(t, s, direct(appA, "alice", "bob", "c1", "retry"))[0]; !r.Duplicate || r.Msg.Seq != 1 {
		t.Fatalf("retry inside the window: seq %d Duplicate %t, want the original (seq 1)", r.Msg.Seq, r.Duplicate)
	}

	n, err := s.PruneDedup(ctx, stored.Add(time.Minute))
	if err != nil {
		t.Fatalf("PruneDedup: %v", err)
	}
	if n != 2 {
		t.Errorf("PruneDedup forgot %d entries, want 2 (one per app)", n)
	}
	r := mustAppend(t, s, direct(appA, "alice", "bob", "c1", "late retry"))[0]
	if r.Duplicate || r.Msg.Seq != 2 {
		t.Fatalf("retry after pruning: seq %d Duplicate %t, want a new message, seq 2", r.Msg.Seq, r.Duplicate)
	}
	// The new message has an entry of its own again.
	if r2 := mustAppend(t, s, direct(appA, "alice", "bob", "c1", "again"))[0]; !r2.Duplicate || r2.Msg.Id != r.Msg.Id {
		t.Errorf("retry of the new message: Duplicate %t id %d, want id %d", r2.Duplicate, r2.Msg.Id, r.Msg.Id)
	}
	msgs := mustMessages(t, s, appA, conv, 0, 100)
	checkSeqs(t, "messages after pruning", msgs, span(1, 2))
	if len(msgs) > 0 && text(t, msgs[0]) != "original" {
		t.Errorf("seq 1 text %q after pruning, want %q", text(t, msgs[0]), "original")
	}
	if n, err := s.PruneDedup(ctx, stored.Add(-time.Hour)); err != nil || n != 0 {
		t.Errorf("PruneDedup again, before everything: %d, %v; want 0, nil", n, err)
	}
}

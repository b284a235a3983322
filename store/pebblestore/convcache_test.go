package pebblestore

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/qim-im/qim/store"
)

// checkConvCache checks that the cache holds at most limit entries, each
// once in the map and in the ring, and returns how many it holds.
func checkConvCache(t *testing.T, s *Store, limit int) int {
	t.Helper()
	s.seqMu.RLock()
	defer s.seqMu.RUnlock()
	if len(s.convs) > limit {
		t.Errorf("%d conversations cached, want at most %d", len(s.convs), limit)
	}
	if len(s.convRing) != len(s.convs) {
		t.Errorf("%d entries in the ring, %d in the map", len(s.convRing), len(s.convs))
	}
	for _, c := range s.convRing {
		if s.convs[c.key] != c {
			t.Errorf("ring entry %q is not the map's", c.key)
		}
	}
	return len(s.convs)
}

// TestConvCacheBound writes three rounds to three times as many
// conversations as the cache holds, so that most writes miss and read the
// last seq back from the database, and checks the bound and the seqs.
func TestConvCacheBound(t *testing.T) {
	ctx := t.Context()
	const bound, convs, rounds = 20, 60, 3
	dir := t.TempDir()
	s := openT(t, dir, Options{NoSync: true, MaxCachedConvs: bound})
	user := func(i int) string { return fmt.Sprintf("u%02d", i) }
	for round := 1; round <= rounds; round++ {
		for i := range convs {
			res, err := s.Append(ctx, []store.Append{msg(user(i), "peer", fmt.Sprint(round))})
			if err != nil {
				t.Fatalf("Append: %v", err)
			}
			if res[0].Msg.Seq != uint64(round) {
				t.Fatalf("round %d, conversation %d: seq %d", round, i, res[0].Msg.Seq)
			}
			checkConvCache(t, s, bound)
		}
	}

	// One Append to more conversations than the bound pins them all: the
	// cache grows past the bound for it, and shrinks back on the next miss.
	var batch []store.Append
	for i := range 2 * bound {
		batch = append(batch, msg(user(i), "peer", "batch"))
	}
	if _, err := s.Append(ctx, batch); err != nil {
		t.Fatalf("Append: %v", err)
	}
	checkConvCache(t, s, 2*bound)
	if _, err := s.Append(ctx, []store.Append{msg("newcomer", "peer", "1")}); err != nil {
		t.Fatalf("Append: %v", err)
	}
	checkConvCache(t, s, bound)

	for i := range convs {
		want := uint64(rounds)
		if i < 2*bound {
			want++
		}
		checkDense(t, s, "org/app", store.DirectConv(user(i), "peer"), want)
	}
	s.Close()
	s = openT(t, dir, Options{NoSync: true})
	defer s.Close()
	checkDense(t, s, "org/app", store.DirectConv(user(convs-1), "peer"), rounds)
}

// TestConvCacheConcurrent races writers over three times as many
// conversations as the cache holds, every write synced, with readers
// checking that each conversation's seqs stay dense and its last seq never
// goes back.
func TestConvCacheConcurrent(t *testing.T) {
	ctx := t.Context()
	const bound, convs, writers, perWriter, readers = 16, 48, 8, 150, 2
	s := openT(t, t.TempDir(), Options{MaxCachedConvs: bound})
	defer s.Close()
	conv := func(i int) string { return store.DirectConv(fmt.Sprintf("u%02d", i), "peer") }

	var wg, rg sync.WaitGroup
	wrote := make(chan struct{}, 1)
	stop := make(chan struct{})
	seqs := make([][]uint64, convs) // guarded by mu
	var mu sync.Mutex
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				c := (w*7 + i*13) % convs
				m := msg(fmt.Sprintf("u%02d", c), "peer", fmt.Sprint(w, "-", i))
				res, err := s.Append(ctx, []store.Append{m})
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				mu.Lock()
				seqs[c] = append(seqs[c], res[0].Msg.Seq)
				mu.Unlock()
				select {
				case wrote <- struct{}{}:
				default:
				}
				checkConvCache(t, s, bound)
			}
		})
	}
	for r := range readers {
		rg.Go(func() {
			seen := make([]uint64, convs)
			// One check per Append at most, so that readers do not take
			// the writers' CPU.
			for i := 0; ; i++ {
				select {
				case <-wrote:
				case <-stop:
					return
				}
				c := (r + i*5) % convs
				last, err := s.LastSeq(ctx, "org/app", conv(c))
				if err != nil {
					t.Errorf("LastSeq: %v", err)
					return
				}
				if last < seen[c] {
					t.Errorf("%s: LastSeq went back from %d to %d", conv(c), seen[c], last)
				}
				seen[c] = last
				msgs, err := s.Messages(ctx, "org/app", conv(c), 0, writers*perWriter)
				if err != nil {
					t.Errorf("Messages: %v", err)
					return
				}
				for j, m := range msgs {
					if m.Seq != uint64(j+1) {
						t.Errorf("%s: seq %d at %d", conv(c), m.Seq, j)
						return
					}
				}
				if uint64(len(msgs)) < last {
					t.Errorf("%s: %d messages after LastSeq %d", conv(c), len(msgs), last)
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	rg.Wait()

	total := 0
	for c := range convs {
		slices.Sort(seqs[c])
		for j, seq := range seqs[c] {
			if seq != uint64(j+1) {
				t.Fatalf("%s: Append returned seqs %v, want 1..%d once each", conv(c), seqs[c], len(seqs[c]))
			}
		}
		checkDense(t, s, "org/app", conv(c), uint64(len(seqs[c])))
		total += len(seqs[c])
	}
	if total != writers*perWriter {
		t.Errorf("%d messages, want %d", total, writers*perWriter)
	}
	checkConvCache(t, s, bound)
}

// TestConvCacheKeepsInFlight holds the sync of an Append and makes another
// Append, to two conversations, need the only cache slot: neither the
// entry of the conversation whose message is not synced nor the one that
// the second Append took before it looked up its second conversation may
// go, or LastSeq would read an unsynced "c" key from the database (and the
// next Append would make a second entry for the conversation).
func TestConvCacheKeepsInFlight(t *testing.T) {
	ctx := t.Context()
	gate, fs := newSyncGate()
	s := openT(t, t.TempDir(), Options{FS: fs, MaxCachedConvs: 1})
	defer s.Close()
	defer gate.open() // before Close, which waits for the Appends

	var wg sync.WaitGroup
	appendFrom := func(from ...string) {
		var msgs []store.Append
		for _, f := range from {
			msgs = append(msgs, msg(f, "peer", "1"))
		}
		wg.Go(func() {
			if _, err := s.Append(ctx, msgs); err != nil {
				t.Errorf("Append: %v", err)
			}
		})
	}
	gate.hold.Store(true)
	appendFrom("alice")
	<-gate.blocked // alice's batch is written and being synced
	appendFrom("bob", "dave")
	// Wait until the second batch is written, so that its Append has
	// looked for slots.
	for deadline := time.Now().Add(5 * time.Second); ; {
		if ok, _ := s.has(msgKey("org/app", store.DirectConv("bob", "peer"), 1)); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the second batch was not written")
		}
		time.Sleep(time.Millisecond)
	}
	for _, from := range []string{"alice", "bob", "dave"} {
		if last, err := s.LastSeq(ctx, "org/app", store.DirectConv(from, "peer")); err != nil || last != 0 {
			t.Errorf("LastSeq(%s) before the sync: %d, %v; want 0", from, last, err)
		}
	}
	checkConvCache(t, s, 3)

	gate.open()
	wg.Wait()
	for _, from := range []string{"alice", "bob", "dave"} {
		checkDense(t, s, "org/app", store.DirectConv(from, "peer"), 1)
	}
	if _, err := s.Append(ctx, []store.Append{msg("carol", "peer", "1")}); err != nil {
		t.Fatal(err)
	}
	checkConvCache(t, s, 1)
}

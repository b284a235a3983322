package pebblestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"google.golang.org/protobuf/proto"

	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// oldMsg is a message of a data directory written before the time index.
type oldMsg struct {
	app, from, to, clientMsgID string
	ts                         int64
}

// writeOldDir writes msgs into a new database in dir as the Store did before
// dedup entries had a time index: messages, "c", "i" and "d" keys, and the
// last id, without "dt" keys or the marker. It adds, in org/app2, a dedup
// entry "lost" whose message is missing, and a contact and a cursor, so that
// the backfill has other keys to skip.
func writeOldDir(t *testing.T, dir string, msgs []oldMsg) {
	t.Helper()
	db, err := pebble.Open(dir, &pebble.Options{Logger: pebbleLogger{slog.New(slog.DiscardHandler)}})
	if err != nil {
		t.Fatal(err)
	}
	b := db.NewBatch()
	set := func(k, v []byte) {
		if err := b.Set(k, v, nil); err != nil {
			t.Fatal(err)
		}
	}
	last := make(map[string]uint64) // by app 0 conv
	var id uint64
	for _, m := range msgs {
		conv := store.DirectConv(m.from, m.to)
		last[m.app+"\x00"+conv]++
		seq := last[m.app+"\x00"+conv]
		id++
		v, err := proto.Marshal(&qimpb.Message{
			Id: id, Seq: seq, Timestamp: m.ts, Type: qimpb.MessageType_TXT, Payload: []byte("x"),
			FromUser: m.from, ToUser: m.to, ClientMsgId: m.clientMsgID,
		})
		if err != nil {
			t.Fatal(err)
		}
		set(msgKey(m.app, conv, seq), v)
		set(dedupKey(m.app, m.from, m.clientMsgID), encodeDedup(conv, seq))
		set(convKey(m.app, conv), encodeU64(seq))
		set(inboxKey(m.app, m.from, conv), nil)
		set(inboxKey(m.app, m.to, conv), nil)
	}
	set(dedupKey("org/app2", "alice", "lost"), encodeDedup(store.DirectConv("alice", "bob"), 99))
	set(contactKey("org/app", "alice", "bob"), nil)
	set(cursorKey("org/app", "bob", "phone", store.DirectConv("alice", "bob")), encodeU64(1))
	set(metaLastIDKey, encodeU64(id))
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestDedupIndexBackfill opens a data directory written before the time
// index, and checks that Open indexes its dedup entries (across more than
// one batch, several apps, and a missing message), that PruneDedup then
// forgets the old ones only, and that a reopen does not index again.
func TestDedupIndexBackfill(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	now := time.Now()
	old, recent := now.Add(-2*time.Hour).UnixMilli(), now.UnixMilli()
	nOld := 2*dedupBatch + 345
	var msgs []oldMsg
	for i := range nOld {
		msgs = append(msgs, oldMsg{"org/app", "alice", "bob", fmt.Sprint("old-", i), old})
	}
	msgs = append(msgs,
		oldMsg{"org/app", "alice", "bob", "new-1", recent},
		oldMsg{"org/app", "alice", "bob", "new-2", recent},
		oldMsg{"org/app2", "alice", "bob", "old-0", old},
	)
	writeOldDir(t, dir, msgs)
	conv := store.DirectConv("alice", "bob")

	s := openT(t, dir, Options{})
	if ok, err := s.has(metaDedupIdxKey); err != nil || !ok {
		t.Fatalf("marker after Open: %t, %v", ok, err)
	}
	if got, want := checkDedupIndex(t, s), nOld+4; got != want {
		t.Fatalf("%d dedup entries indexed, want %d", got, want)
	}
	for _, k := range [][]byte{
		dedupTimeKey(old, "org/app", "alice", "old-7"),
		dedupTimeKey(recent, "org/app", "alice", "new-2"),
		dedupTimeKey(old, "org/app2", "alice", "old-0"),
		dedupTimeKey(0, "org/app2", "alice", "lost"),
	} {
		if ok, err := s.has(k); err != nil || !ok {
			t.Errorf("index key %q: %t, %v", k, ok, err)
		}
	}

	appendOne := func(app, clientMsgID string) store.AppendResult {
		t.Helper()
		m := msg("alice", "bob", clientMsgID)
		m.App = app
		res, err := s.Append(ctx, []store.Append{m})
		if err != nil {
			t.Fatalf("Append %s %s: %v", app, clientMsgID, err)
		}
		return res[0]
	}
	if r := appendOne("org/app", "old-5"); !r.Duplicate || r.Msg.Seq != 6 {
		t.Errorf("retry of old-5 before pruning: Duplicate %t seq %d, want the original, seq 6", r.Duplicate, r.Msg.Seq)
	}

	n, err := s.PruneDedup(ctx, now.Add(-time.Hour))
	if err != nil || n != nOld+2 {
		t.Fatalf("PruneDedup: %d, %v; want %d (the old ones of both apps and the lost one)", n, err, nOld+2)
	}
	for _, tt := range []struct {
		app, clientMsgID string
		dup              bool
		seq              uint64
	}{
		{"org/app", "old-5", false, uint64(nOld + 3)},
		{"org/app", "new-1", true, uint64(nOld + 1)},
		{"org/app2", "old-0", false, 2},
		{"org/app2", "lost", false, 3},
	} {
		if r := appendOne(tt.app, tt.clientMsgID); r.Duplicate != tt.dup || r.Msg.Seq != tt.seq {
			t.Errorf("retry of %s %s after pruning: Duplicate %t seq %d, want %t, %d", tt.app, tt.clientMsgID, r.Duplicate, r.Msg.Seq, tt.dup, tt.seq)
		}
	}
	if got := checkDedupIndex(t, s); got != 5 {
		t.Errorf("%d dedup entries after pruning and retries, want 5", got)
	}
	checkDense(t, s, "org/app", conv, uint64(nOld+3))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// The marker stops a second backfill: an entry without its index
	// entry stays so.
	s = openT(t, dir, Options{})
	b := s.db.NewBatch()
	b.Delete(dedupTimeKey(recent, "org/app", "alice", "new-2"), nil)
	if err := s.write(b, true); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openT(t, dir, Options{})
	defer s.Close()
	if ok, err := s.has(dedupTimeKey(recent, "org/app", "alice", "new-2")); err != nil || ok {
		t.Errorf("second Open indexed again: %t, %v", ok, err)
	}
}

// TestPruneDedupConcurrentAppends prunes repeatedly, with a bound in the
// future, while writers re-use a few client message ids, and checks that
// every stored message got one dedup entry, deleted at most once, that no
// entry is left without its index entry or message, and that seqs stay
// dense.
func TestPruneDedupConcurrentAppends(t *testing.T) {
	ctx := t.Context()
	s := openT(t, t.TempDir(), Options{NoSync: true})
	defer s.Close()
	const writers, perWriter, ids = 4, 300, 40
	var stored [writers]int
	var pruned atomic.Int64
	var done atomic.Bool
	var wg, pruners sync.WaitGroup
	for range 2 {
		pruners.Go(func() {
			for !done.Load() {
				n, err := s.PruneDedup(ctx, time.Now().Add(time.Minute))
				if err != nil {
					t.Errorf("PruneDedup: %v", err)
					return
				}
				pruned.Add(int64(n))
			}
		})
	}
	for w := range writers {
		wg.Go(func() {
			from := fmt.Sprint("u", w)
			for i := range perWriter {
				id := fmt.Sprint(i % ids)
				res, err := s.Append(ctx, []store.Append{msg(from, "peer", id)})
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				if r := res[0]; r.Msg.ClientMsgId != id || r.Msg.FromUser != from {
					t.Errorf("Append %s %s returned %s %s", from, id, r.Msg.FromUser, r.Msg.ClientMsgId)
				} else if !r.Duplicate {
					stored[w]++
				}
			}
		})
	}
	wg.Wait()
	done.Store(true)
	pruners.Wait()

	left := checkDedupIndex(t, s)
	total := 0
	for w := range writers {
		total += stored[w]
		checkDense(t, s, "org/app", store.DirectConv(fmt.Sprint("u", w), "peer"), uint64(stored[w]))
	}
	if got := int(pruned.Load()) + left; got != total {
		t.Errorf("%d entries pruned + %d left = %d, want one per stored message, %d", pruned.Load(), left, got, total)
	}
	t.Logf("%d messages stored, %d entries pruned", total, pruned.Load())
}

// TestPruneDedupBound checks that PruneDedup forgets the messages stored
// strictly before its bound, to the nanosecond.
func TestPruneDedupBound(t *testing.T) {
	ctx := t.Context()
	s := openT(t, "db", Options{FS: vfs.NewMem(), NoSync: true})
	defer s.Close()
	res, err := s.Append(ctx, []store.Append{msg("alice", "bob", "1")})
	if err != nil {
		t.Fatal(err)
	}
	stored := time.UnixMilli(res[0].Msg.Timestamp)
	for _, tt := range []struct {
		before time.Time
		want   int
	}{
		{stored.Add(-time.Nanosecond), 0},
		{stored, 0},
		{stored.Add(time.Nanosecond), 1},
		{stored.Add(time.Hour), 0}, // already forgotten
	} {
		if n, err := s.PruneDedup(ctx, tt.before); err != nil || n != tt.want {
			t.Errorf("PruneDedup(stored%+v): %d, %v; want %d", tt.before.Sub(stored), n, err, tt.want)
		}
	}
	if n, err := s.PruneDedup(ctx, time.Time{}); err != nil || n != 0 {
		t.Errorf("PruneDedup(zero time): %d, %v", n, err)
	}
	done, cancel := context.WithCancel(ctx)
	cancel()
	if n, err := s.PruneDedup(done, stored.Add(time.Hour)); !errors.Is(err, context.Canceled) || n != 0 {
		t.Errorf("PruneDedup with a cancelled context: %d, %v", n, err)
	}
}

// checkDedupIndex checks that every dedup entry has exactly one time index
// entry and a message, and that every index entry has its dedup entry, and
// returns the number of dedup entries.
func checkDedupIndex(t *testing.T, s *Store) int {
	t.Helper()
	type entry struct{ app, user, clientMsgID string }
	dedup := make(map[entry]bool)
	err := s.scanRange(tenantsLower, tenantsUpper, 0, func(k, v []byte) error {
		app, _ := tenantOf(k)
		rest, ok := bytes.CutPrefix(k, tenant(app).add("d").sep())
		if !ok {
			return nil
		}
		user, clientMsgID, _ := bytes.Cut(rest, []byte{sep})
		dedup[entry{app, string(user), string(clientMsgID)}] = true
		conv, seq, err := decodeDedup(v)
		if err != nil {
			return err
		}
		if ok, err := s.has(msgKey(app, conv, seq)); err != nil || (!ok && string(clientMsgID) != "lost") {
			t.Errorf("dedup entry %q without its message (%v)", k, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	indexed := make(map[entry]int)
	err = s.scan(dedupTimePrefix, func(rest, _ []byte) error {
		app, user, clientMsgID, err := parseDedupTimeKey(append(slices.Clone(dedupTimePrefix), rest...))
		if err != nil {
			return err
		}
		e := entry{app, user, clientMsgID}
		indexed[e]++
		if !dedup[e] {
			t.Errorf("index entry %v without its dedup entry", e)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for e := range dedup {
		if indexed[e] != 1 {
			t.Errorf("dedup entry %v has %d index entries, want 1", e, indexed[e])
		}
	}
	return len(dedup)
}

// checkDense checks that conversation conv holds seqs 1..last, and LastSeq
// says last.
func checkDense(t *testing.T, s *Store, app, conv string, last uint64) {
	t.Helper()
	if got, err := s.LastSeq(t.Context(), app, conv); err != nil || got != last {
		t.Errorf("LastSeq(%s): %d, %v; want %d", conv, got, err, last)
	}
	msgs, err := s.Messages(t.Context(), app, conv, 0, int(last)+10)
	if err != nil {
		t.Fatalf("Messages(%s): %v", conv, err)
	}
	for i, m := range msgs {
		if m.Seq != uint64(i+1) {
			t.Fatalf("Messages(%s): seq %d at %d, want dense seqs", conv, m.Seq, i)
		}
	}
	if uint64(len(msgs)) != last {
		t.Errorf("Messages(%s): %d messages, want %d", conv, len(msgs), last)
	}
}

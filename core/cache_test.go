package core

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	qimpb "github.com/qim-im/qim/proto"
)

// TestRecentCacheBytes fills the recent-messages cache with large messages
// in many groups (one account can make 1,000 groups and write 4,000-byte
// messages in each) and checks that it holds no more than its byte budget,
// in total and per group, and that the heap agrees: before the budget it was
// bounded by count only (4,096 groups x 256 messages, about 5.5 GiB of such
// messages).
func TestRecentCacheBytes(t *testing.T) {
	const (
		budget   = 4 << 20
		groups   = 200
		perGroup = 160
	)
	c, err := newRecentCache(4096, 256, budget, true)
	if err != nil {
		t.Fatal(err)
	}
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapInuse
	text := strings.Repeat("x", 4000)
	for g := range groups {
		conv := fmt.Sprintf("g:g%d", g)
		for seq := uint64(1); seq <= perGroup; seq++ {
			m := &qimpb.Message{Seq: seq, FromUser: "mallory", ToGroup: conv[2:], Payload: []byte(text)}
			c.add("demo/demo", conv, m, MsgCost(m))
		}
		if b := c.Bytes(); b > budget {
			t.Fatalf("after %d groups the cache holds %d B, over its budget of %d B", g+1, b, budget)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	growth := int64(ms.HeapInuse) - int64(before)
	t.Logf("%d groups x %d messages of 4,000 B: cache holds %d B (budget %d), heap grew by %d B", groups, perGroup, c.Bytes(), budget, growth)
	if growth > 2*budget {
		t.Errorf("heap grew by %d B with a cache budget of %d B", growth, budget)
	}
	// The latest group is served from the cache, as a contiguous run
	// ending at its latest message, cut to the per-group budget.
	last := fmt.Sprintf("g:g%d", groups-1)
	got, ok := c.after("demo/demo", last, 0, perGroup)
	if ok || len(got) != 0 {
		// seq 1 is no longer cached: the cache cannot answer from 0.
		t.Fatalf("after(0) = %d messages, %v; want a miss (the oldest were dropped)", len(got), ok)
	}
	got, ok = c.after("demo/demo", last, perGroup-5, 10)
	if !ok || len(got) != 5 || got[0].Seq != perGroup-4 || got[4].Seq != perGroup {
		t.Fatalf("after(%d) = %d messages, %v; want seqs %d..%d", perGroup-5, len(got), ok, perGroup-4, perGroup)
	}
	runtime.KeepAlive(c)
}

// TestRecentCacheCluster checks the cache of a node in a cluster: other
// nodes' messages arrive late, several times or not at all, and the cache
// still holds only a contiguous run of the store, never answers for the
// tail (another node may have appended since), and never serves a hole.
func TestRecentCacheCluster(t *testing.T) {
	c, err := newRecentCache(16, 64, 1<<20, false)
	if err != nil {
		t.Fatal(err)
	}
	const app, conv = "demo/demo", "g:g1"
	add := func(seqs ...uint64) {
		for _, seq := range seqs {
			m := &qimpb.Message{Seq: seq, FromUser: "alice", ToGroup: "g1", Payload: fmt.Appendf(nil, "m%d", seq)}
			c.add(app, conv, m, MsgCost(m))
		}
	}
	seqs := func(ms []*qimpb.Message) []uint64 {
		var out []uint64
		for _, m := range ms {
			out = append(out, m.Seq)
		}
		return out
	}
	add(3, 4, 4, 5, 3) // late and repeated copies change nothing
	if got, ok := c.after(app, conv, 2, 10); !ok || fmt.Sprint(seqs(got)) != "[3 4 5]" {
		t.Fatalf("after(2) = %v, %v; want [3 4 5]", seqs(got), ok)
	}
	if _, ok := c.after(app, conv, 5, 10); ok {
		t.Fatal("after(5) answered: the cache cannot know that nothing newer exists")
	}
	if _, ok := c.history(app, conv, 0, 2); ok {
		t.Fatal("history(latest) answered: the cache cannot know the latest")
	}
	if got, ok := c.history(app, conv, 6, 2); !ok || fmt.Sprint(seqs(got)) != "[4 5]" {
		t.Fatalf("history(before 6) = %v, %v; want [4 5]", seqs(got), ok)
	}
	if _, ok := c.history(app, conv, 7, 2); ok {
		t.Fatal("history(before 7) answered: seq 6 may exist")
	}
	add(8) // 6 and 7 were lost: the run starts again at 8
	if _, ok := c.after(app, conv, 5, 10); ok {
		t.Fatal("after(5) answered across a hole")
	}
	add(6, 7) // late: older than the run, ignored
	if got, ok := c.after(app, conv, 7, 10); !ok || fmt.Sprint(seqs(got)) != "[8]" {
		t.Fatalf("after(7) = %v, %v; want [8]", seqs(got), ok)
	}
	if c.Bytes() <= 0 {
		t.Fatalf("the cache holds %d B", c.Bytes())
	}
}

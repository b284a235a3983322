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
	c, err := newRecentCache(4096, 256, budget)
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

package pgstore

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/qim-im/qim/store"
)

// TestClaimPushProcesses has 3 Stores (3 pools, as 3 qimd processes would)
// claim from one outbox at once, two goroutines each, until their claims
// come back empty: every job is claimed exactly once within its lease.
func TestClaimPushProcesses(t *testing.T) {
	const (
		stores   = 3
		perStore = 2
		jobs     = 300
		app      = "org/app"
	)
	dbURL := testURL(t)
	schema := newSchema(t, dbURL)
	ss := make([]*Store, stores)
	for i := range ss {
		ss[i] = openT(t, dbURL, schema)
		defer ss[i].Close()
	}
	due := time.UnixMilli(1_800_000_000_000)
	msgs := make([]store.Append, jobs)
	for i := range msgs {
		from := fmt.Sprint("u", i%20)
		msgs[i] = store.Append{App: app, Conv: store.DirectConv(from, "hub"), Members: []string{from, "hub"},
			Msg: testMessage(from, "hub", fmt.Sprint("c", i)), PushAt: due}
	}
	if _, err := ss[0].Append(t.Context(), msgs); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	claimed := make(map[uint64]int)
	var wg sync.WaitGroup
	for w := range stores * perStore {
		s := ss[w%stores]
		wg.Go(func() {
			for range jobs { // bounded; ends at the first empty claim
				got, err := s.ClaimPush(t.Context(), due, time.Hour, 5)
				if err != nil {
					t.Errorf("worker %d: ClaimPush: %v", w, err)
					return
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				for _, j := range got {
					claimed[j.ID]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(claimed) != jobs {
		t.Errorf("%d jobs claimed, want %d", len(claimed), jobs)
	}
	for id, n := range claimed {
		if n != 1 {
			t.Errorf("job %d claimed %d times within one lease", id, n)
		}
	}
}

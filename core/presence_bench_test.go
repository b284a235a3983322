package core

import (
	"context"
	"fmt"
	"testing"

	"github.com/qim-im/qim/presence"
	qimpb "github.com/qim-im/qim/proto"
)

// BenchmarkPresenceFanout measures one presence change of a user whose
// 10,000 contacts (mutual) are all online, one device each: what the hub
// does for it (read the contacts, keep those who follow the user, route
// the event to each), on an in-memory Pebble store. The baseline,
// "route-only", routes the same event to the same 10,000 users without
// reading the store: the router's share.
func BenchmarkPresenceFanout(b *testing.B) {
	const n = 10_000
	h := newHub(b, Config{})
	ctx := context.Background()
	st := h.Store()
	var rc countingReceiver
	users := make([]string, n)
	for i := range users {
		users[i] = fmt.Sprintf("user-%05d", i)
		if err := st.AddContact(ctx, "app", "star", users[i]); err != nil {
			b.Fatal(err)
		}
		if err := st.AddContact(ctx, "app", users[i], "star"); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(h.Router().Register("app", users[i], &rc))
	}
	change := presence.Change{App: "app", Presence: &qimpb.Presence{User: "star", State: qimpb.PresenceState_AWAY}}
	b.Run("hub", func(b *testing.B) {
		rc.n.Store(0)
		b.ReportAllocs()
		for b.Loop() {
			h.fanOutPresence(change)
		}
		if got := rc.n.Load(); got != int64(b.N)*n {
			b.Fatalf("%d deliveries, want %d", got, int64(b.N)*n)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(int64(b.N)*n), "ns/contact")
	})
	b.Run("route-only", func(b *testing.B) {
		ev := Event{Note: &qimpb.Event{Presence: change.Presence}}
		b.ReportAllocs()
		for b.Loop() {
			h.Router().Deliver("app", users, ev)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(int64(b.N)*n), "ns/contact")
	})
}

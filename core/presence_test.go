package core

import (
	"context"
	"testing"
	"time"

	qimpb "github.com/qim-im/qim/proto"
)

// presences returns the presence events received, in order.
func (r *recorder) presences() []*qimpb.Presence {
	var out []*qimpb.Presence
	for _, ev := range r.notes() {
		if p := ev.Note.Presence; p != nil {
			out = append(out, p)
		}
	}
	return out
}

// TestPresenceFanout: alice's presence reaches the users in her contacts
// who follow her (bob), and nobody else (carol follows her, but is not in
// her contacts); a reconnection within the grace period shows nothing; a
// real disconnection shows one OFFLINE.
func TestPresenceFanout(t *testing.T) {
	const grace, window = 600 * time.Millisecond, 100 * time.Millisecond
	h := newHub(t, Config{PresenceGrace: grace, PresenceCoalesce: window})
	ctx := context.Background()
	for _, p := range [][2]string{{"alice", "bob"}, {"bob", "alice"}, {"carol", "alice"}} {
		if _, err := h.Contact(ctx, "a", p[0], &qimpb.ContactRequest{Op: qimpb.ContactOp_CONTACT_ADD, User: p[1]}); err != nil {
			t.Fatal(err)
		}
	}
	bob, carol := listen(t, h, "a", "bob"), listen(t, h, "a", "carol")
	c := h.JoinPresence("a", "alice", "phone")
	eventually(t, "bob sees alice online", func() bool { return len(bob.presences()) == 1 })
	if p := bob.presences()[0]; p.User != "alice" || p.State != qimpb.PresenceState_ONLINE {
		t.Fatalf("bob got %v", p)
	}
	// A resume: the old connection ends, a new one comes within the grace.
	// (Later than the coalescing window: it alone would hide a shorter
	// absence.)
	c.Leave()
	time.Sleep(grace / 2)
	c = h.JoinPresence("a", "alice", "phone")
	time.Sleep(grace + 3*window)
	if n := len(bob.presences()); n != 1 {
		t.Fatalf("a reconnection within the grace period showed %d more events", n-1)
	}
	left := time.Now()
	c.Leave()
	eventually(t, "bob sees alice offline", func() bool { return len(bob.presences()) == 2 })
	p := bob.presences()[1]
	if p.State != qimpb.PresenceState_OFFLINE || p.LastSeen < left.Add(-time.Second).UnixMilli() {
		t.Fatalf("bob got %v", p)
	}
	if d := time.Since(left); d > grace+window+500*time.Millisecond {
		t.Errorf("offline shown %v after the disconnection, want within grace + window", d)
	}
	if n := len(carol.presences()); n != 0 {
		t.Fatalf("carol, not in alice's contacts, got %d presence events", n)
	}
	snap, err := h.PresenceSnapshot(ctx, "a", "bob")
	if err != nil || len(snap) != 1 || snap[0].User != "alice" {
		t.Fatalf("bob's snapshot: %v, %v", snap, err)
	}
	if snap, err = h.PresenceSnapshot(ctx, "a", "carol"); err != nil || len(snap) != 0 {
		t.Fatalf("carol's snapshot: %v, %v", snap, err)
	}
	if got := h.Presence("a", "alice"); got.State != qimpb.PresenceState_OFFLINE {
		t.Fatalf("Presence: %v", got)
	}
}

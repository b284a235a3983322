package core

import (
	"sync"
	"testing"
)

// device is a Receiver standing for one connection of a device, opened at
// an epoch; it applies the REPLACED rule (Event.Replaces) as a session
// does.
type device struct {
	name  string
	epoch uint64

	mu       sync.Mutex
	replaced bool
}

func (d *device) Receive(ev Event) {
	if ev.Replaces(d.name, d.epoch) {
		d.mu.Lock()
		d.replaced = true
		d.mu.Unlock()
	}
}

func (d *device) isReplaced() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.replaced
}

// TestReplaceByEpoch connects one device three times (epochs from the
// store) and delivers their announcements in an order other than the
// epochs': an announcement closes exactly the connections of that device
// with an older epoch, never its own connection, a newer one, or another
// device's.
func TestReplaceByEpoch(t *testing.T) {
	h := newHub(t, Config{})
	epoch := func(dev string) uint64 {
		e, err := h.Store().NextEpoch(t.Context(), "app", "alice", dev)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	c1 := &device{name: "phone", epoch: epoch("phone")}
	c2 := &device{name: "phone", epoch: epoch("phone")}
	c3 := &device{name: "phone", epoch: epoch("phone")}
	laptop := &device{name: "laptop", epoch: epoch("laptop")}
	for _, d := range []*device{c1, c2, c3, laptop} {
		t.Cleanup(h.Router().Register("app", "alice", d))
	}
	if !(c1.epoch < c2.epoch && c2.epoch < c3.epoch) {
		t.Fatalf("epochs %d %d %d do not increase", c1.epoch, c2.epoch, c3.epoch)
	}
	announce := func(d *device) {
		h.Router().Deliver("app", []string{"alice"}, Event{ReplaceDevice: d.name, ReplaceEpoch: d.epoch})
	}
	state := func() [4]bool {
		return [4]bool{c1.isReplaced(), c2.isReplaced(), c3.isReplaced(), laptop.isReplaced()}
	}
	// The second connection's handshake completes first: it closes the
	// first only.
	announce(c2)
	if got := state(); got != [4]bool{true, false, false, false} {
		t.Fatalf("after the second connection's announcement: %v", got)
	}
	// The first one's, late, closes nothing (it once closed the newer).
	announce(c1)
	if got := state(); got != [4]bool{true, false, false, false} {
		t.Fatalf("after the first connection's late announcement: %v", got)
	}
	announce(c3)
	if got := state(); got != [4]bool{true, true, false, false} {
		t.Fatalf("after the third connection's announcement: %v", got)
	}
	announce(laptop)
	if got := state(); got != [4]bool{true, true, false, false} {
		t.Fatalf("after the laptop's announcement: %v", got)
	}
}

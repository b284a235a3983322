package session

import (
	"sync"

	"github.com/qim-im/qim/core"
)

// Memory budgets. What the server holds for a device that does not read is
// bounded in bytes, per device and in total:
//
//   - messages routed to a pusher while it is busy (its live buffer) and
//     unstored (offline=false) messages waiting for it;
//   - frames queued for a conversation stream's writer: pushes, and the
//     responses to the device's own requests.
//
// Each is charged to the device's deviceMem, which also charges the hub's
// core.Budget. A stored message that finds no room is dropped from the live
// buffer (the pusher reads it back from the recent cache or the store when
// its turn comes); an unstored one is dropped (best-effort); a push or a
// response that finds no room waits until the device's writers have written
// what it holds. A device that holds nothing may always take one frame,
// whatever its size or the hub's total, so that every device makes progress:
// a device holds at most max(limit, one frame), and the hub at most its
// limit plus one frame per device.
//
// A message routed live to many devices is one object shared by all of
// them (with its core.PushFrame): each device is charged its size, but the
// hub only once, from routing until no device holds it (core/budget.go).

// deviceMem is one session's budget. It is safe for concurrent use.
type deviceMem struct {
	// Static after construction.
	limit int64
	hub   *core.Budget

	mu    sync.Mutex
	used  int64         // guarded by mu
	freed chan struct{} // closed by give when someone waits; guarded by mu
}

func newDeviceMem(limit int64, hub *core.Budget) *deviceMem {
	return &deviceMem{limit: limit, hub: hub}
}

// charge is what one buffered item or queued frame holds of the budgets.
// The zero charge holds nothing.
type charge struct {
	n      int64
	shared *core.PushFrame // the hub is charged through it; nil: charged directly
}

// take charges n bytes for an item (shared, when not nil, is the live
// message's shared frame) if the device's and the hub's budgets have room.
// With progress, a device that holds nothing may always take it.
func (d *deviceMem) take(n int64, shared *core.PushFrame, progress bool) (charge, bool) {
	c, ok, _ := d.takeOrWait(n, shared, progress)
	return c, ok
}

// takeOrWait is take that, when there is no room, also returns a channel
// closed when the device gives bytes back.
func (d *deviceMem) takeOrWait(n int64, shared *core.PushFrame, progress bool) (charge, bool, <-chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	force := progress && d.used == 0
	if !force && d.used+n > d.limit {
		return charge{}, false, d.waitLocked()
	}
	if shared != nil {
		if !shared.Hold(force) {
			return charge{}, false, d.waitLocked()
		}
	} else if !d.hub.Take(n, force) {
		return charge{}, false, d.waitLocked()
	}
	d.used += n
	return charge{n: n, shared: shared}, true, nil
}

func (d *deviceMem) waitLocked() <-chan struct{} {
	if d.freed == nil {
		d.freed = make(chan struct{})
	}
	return d.freed
}

// give returns c's bytes and wakes whoever waits for room.
func (d *deviceMem) give(c charge) {
	if c.n == 0 {
		return
	}
	if c.shared != nil {
		c.shared.Release()
	} else {
		d.hub.Give(c.n)
	}
	d.mu.Lock()
	d.used -= c.n
	if d.freed != nil {
		close(d.freed)
		d.freed = nil
	}
	d.mu.Unlock()
}

// Used returns the bytes charged to the device.
func (d *deviceMem) Used() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.used
}

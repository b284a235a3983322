package session

import (
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	qimpb "github.com/qim-im/qim/proto"
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
// hubMem. A stored message that finds no room is dropped from the live
// buffer (the pusher reads it back from the recent cache or the store when
// its turn comes); an unstored one is dropped (best-effort); a push or a
// response that finds no room waits until the device's writers have written
// what it holds. A device that holds nothing may always take one frame,
// whatever its size or the hub's total, so that every device makes progress:
// a device holds at most max(limit, one frame), and the hub at most its
// limit plus one frame per device.
//
// A message routed live to many devices is one object shared by all of
// them (with its push frame): each device is charged its size, but the hub
// only once, from routing until no device holds it (a reference count, so
// that a fan-out to 1,000 devices takes no shared lock).

// hubMem is the hub-wide budget. It is safe for concurrent use.
type hubMem struct {
	limit int64
	used  atomic.Int64
}

// take charges n bytes if they fit (or force is set).
func (h *hubMem) take(n int64, force bool) bool {
	if u := h.used.Add(n); u > h.limit && !force {
		h.used.Add(-n)
		return false
	}
	return true
}

func (h *hubMem) give(n int64) { h.used.Add(-n) }

// Used returns the bytes charged to the hub's budget.
func (h *hubMem) Used() int64 { return h.used.Load() }

// deviceMem is one session's budget. It is safe for concurrent use.
type deviceMem struct {
	// Static after construction.
	limit int64
	hub   *hubMem

	mu    sync.Mutex
	used  int64         // guarded by mu
	freed chan struct{} // closed by give when someone waits; guarded by mu
}

func newDeviceMem(limit int64, hub *hubMem) *deviceMem {
	return &deviceMem{limit: limit, hub: hub}
}

// charge is what one buffered item or queued frame holds of the budgets.
// The zero charge holds nothing.
type charge struct {
	n      int64
	shared *pushFrame // the hub is charged through it; nil: charged directly
}

// take charges n bytes for an item (shared, when not nil, is the live
// message's shared frame) if the device's and the hub's budgets have room.
// With progress, a device that holds nothing may always take it.
func (d *deviceMem) take(n int64, shared *pushFrame, progress bool) (charge, bool) {
	c, ok, _ := d.takeOrWait(n, shared, progress)
	return c, ok
}

// takeOrWait is take that, when there is no room, also returns a channel
// closed when the device gives bytes back.
func (d *deviceMem) takeOrWait(n int64, shared *pushFrame, progress bool) (charge, bool, <-chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	force := progress && d.used == 0
	if !force && d.used+n > d.limit {
		return charge{}, false, d.waitLocked()
	}
	if shared != nil {
		if !shared.hold(d.hub, force) {
			return charge{}, false, d.waitLocked()
		}
	} else if !d.hub.take(n, force) {
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
		c.shared.release(d.hub)
	} else {
		d.hub.give(c.n)
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

// hold takes a reference to a shared frame for a device. The hub was
// charged for it once, when it was routed; unless force, a device takes it
// only while the hub is within its budget.
func (f *pushFrame) hold(h *hubMem, force bool) bool {
	if !force && h.used.Load() > h.limit {
		return false
	}
	f.refs.Add(1) // the router's reference keeps refs above 0 meanwhile
	return true
}

// release drops a reference to a shared frame; the last one gives the hub
// back its bytes.
func (f *pushFrame) release(h *hubMem) {
	if f.refs.Add(-1) == 0 {
		h.give(f.cost)
	}
}

// msgOverhead approximates the heap a decoded Message costs beyond its
// encoded size (struct, string and slice headers).
const msgOverhead = 160

// msgCost is what a message is charged while it is buffered.
func msgCost(m *qimpb.Message) int64 { return int64(proto.Size(m)) + msgOverhead }

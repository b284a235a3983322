package core

import (
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	qimpb "github.com/qim-im/qim/proto"
)

// Memory budgets. What the server holds for devices that do not read is
// bounded in bytes, per device (the device layer's budget, which charges
// this one too) and in total: the hub's Budget. A message routed live to
// many devices is one object shared by all of them, with its PushFrame: each
// device is charged its size, but the hub only once, from routing until no
// device holds it (a reference count, so that a fan-out to 1,000 devices
// takes no shared lock).

// Budget is the hub-wide memory budget: what all devices' sessions buffer
// together. It is safe for concurrent use.
type Budget struct {
	limit int64 // static after construction
	used  atomic.Int64
}

// Take charges n bytes if they fit within the limit, or in any case with
// force, and reports whether it did.
func (b *Budget) Take(n int64, force bool) bool {
	if u := b.used.Add(n); u > b.limit && !force {
		b.used.Add(-n)
		return false
	}
	return true
}

// Give returns n bytes taken before.
func (b *Budget) Give(n int64) { b.used.Add(-n) }

// Used returns the bytes charged.
func (b *Budget) Used() int64 { return b.used.Load() }

// PushFrame is a message's push frame, encoded once, by the first pusher
// that writes it, for every device of this process the message is routed
// to: a group message to 1,000 online members is marshalled once, not 1,000
// times. The frame is the same for every device (its request id is the
// seq). It is charged once to the hub's Budget while anyone holds it.
type PushFrame struct {
	// Static after construction.
	msg    *qimpb.Message
	cost   int64 // MsgCost(msg)
	budget *Budget

	once sync.Once
	b    []byte // set by once
	err  error  // set by once

	// refs counts the devices holding it in their budgets, plus one for
	// the hub while it routes it: the hub's budget is charged cost from
	// newPushFrame until refs drops to 0.
	refs atomic.Int32
}

// newPushFrame returns m's shared frame, charging the hub's budget once
// for it (the hub gives up its own reference with Release after routing).
// cost is MsgCost(m), or 0 to have it computed here.
func (h *Hub) newPushFrame(m *qimpb.Message, cost int64) *PushFrame {
	if cost == 0 {
		cost = MsgCost(m)
	}
	f := &PushFrame{msg: m, cost: cost, budget: h.mem}
	f.refs.Store(1)
	h.mem.Take(f.cost, true)
	return f
}

// Bytes returns the encoded frame, encoding it on the first call. It is
// safe for concurrent use.
func (f *PushFrame) Bytes() ([]byte, error) {
	f.once.Do(func() { f.b, f.err = EncodePush(f.msg) })
	return f.b, f.err
}

// Cost returns what the frame's message is charged to a device that holds
// it: MsgCost of the message.
func (f *PushFrame) Cost() int64 { return f.cost }

// Hold takes a reference to the frame for a device, and reports whether it
// did. The hub was charged for it once, when it was routed; unless force,
// a device takes it only while the hub is within its budget. The device
// gives it back with Release.
func (f *PushFrame) Hold(force bool) bool {
	if !force && f.budget.used.Load() > f.budget.limit {
		return false
	}
	f.refs.Add(1) // the router's reference keeps refs above 0 meanwhile
	return true
}

// Release drops a reference to the frame; the last one gives the hub back
// its bytes.
func (f *PushFrame) Release() {
	if f.refs.Add(-1) == 0 {
		f.budget.Give(f.cost)
	}
}

// EncodePush returns the frame that pushes m to a device: a MESSAGE
// request whose id is m's seq.
func EncodePush(m *qimpb.Message) ([]byte, error) {
	return qimpb.AppendRequestFrame(nil, qimpb.RequestType_MESSAGE, m.Seq, m)
}

// msgOverhead approximates the heap a decoded Message costs beyond its
// encoded size (struct, string and slice headers).
const msgOverhead = 160

// MsgCost is what a message is charged while it is buffered.
func MsgCost(m *qimpb.Message) int64 { return int64(proto.Size(m)) + msgOverhead }

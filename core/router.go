package core

import (
	"sync"
	"time"

	qimpb "github.com/qim-im/qim/proto"
)

// Event is what the router carries to a user's sessions. Apart from Frame,
// it holds values only (no pointer to an object of the process, no counter
// of the process), so that a Router can carry it between processes.
type Event struct {
	// Msg is a message of one of the user's conversations, stored (Seq > 0)
	// or not (Seq == 0).
	Msg *qimpb.Message
	// Read is when Msg was read off its sender's stream, for the delivery
	// latency metric; zero when metrics are off.
	Read time.Time
	// Conv is Msg's conversation (ConvOf(Msg)), set by the Hub when it
	// routes Msg, so that receivers need not work it out again; receivers
	// work it out when it is empty.
	Conv string
	// Frame, set by the Hub when it routes Msg, is Msg's push frame,
	// encoded once for all its receivers in this process and charged once
	// to the hub's memory budget. It is a process-local optimisation: a
	// Router that carries events between processes drops it, and receivers
	// encode their own when it is nil.
	Frame *PushFrame
	// Revoke names a conversation the user lost access to (kicked from or
	// left a group): its pushes stop at once.
	Revoke string
	// ReplaceDevice, when set, announces a new connection of that device,
	// whose epoch (store.Store.NextEpoch) is ReplaceEpoch: every session
	// of the device with an older epoch closes with REPLACED (see
	// Replaces).
	ReplaceDevice string
	ReplaceEpoch  uint64
	// EndSessions, when set, ends every session of the user, on every
	// node, with DISCONNECT UNAUTHENTICATED and this reason (an operator's
	// logout: session.Devices.EndSessions).
	EndSessions string
	// Group, in an event broadcast to every node (Router.Broadcast), names
	// a group of the app whose members or description changed: every hub
	// drops its cached copy of the group.
	Group string
	// Note, when set, is a soft event (a receipt, typing, presence; see
	// docs/PROTOCOL.md section 11) for the user's sessions: each pushes it
	// as an EVENT frame to its device if the device asked for its kind,
	// and drops it otherwise. It is never stored. Broadcast with a Receipt
	// of a group, it tells every hub that the group's receipts changed
	// (receipt watches, watch.go).
	Note *qimpb.Event
	// NoteDevice is the device that caused Note: a session of that device
	// of the user Note reports (its receipt's or typing's user) is not
	// told.
	NoteDevice string
}

// Replaces reports whether ev asks the session of device connected at
// epoch to close with REPLACED: ev announces a newer connection of the
// same device. A session's own announcement never closes it, and neither
// does the late announcement of an older connection (one whose handshake
// completed after a newer one connected).
func (ev *Event) Replaces(device string, epoch uint64) bool {
	return ev.ReplaceDevice != "" && ev.ReplaceDevice == device && epoch < ev.ReplaceEpoch
}

// Receiver is a connected session as the router sees it.
type Receiver interface {
	// Receive hands an event to the session. It must not block: the router
	// calls it from the commit path.
	Receive(ev Event)
}

// Listener is a node's hub, or its device layer, as the router sees it.
type Listener interface {
	// ReceiveNode is handed every event broadcast by any node, this one
	// included (Router.Broadcast), and every event that another node
	// delivered to sessions of this node: once per addressed user with a
	// session here, so possibly several times. It must not block.
	ReceiveNode(app string, ev Event)
	// Missed is called when the router may have lost events addressed to
	// this node: after a reconnection, an overflow, or another node's
	// report that events it sent may have been lost. The listener has its
	// sessions re-read from the store what they may have missed. It must
	// not block.
	Missed()
}

// Router carries events to the sessions of users, wherever they are
// connected. LocalRouter serves one process; cluster.NATSRouter carries
// events between the nodes of a cluster. Any Router other than a
// *LocalRouter is taken to connect several nodes that share a store (see
// Hub).
type Router interface {
	// Register adds r as a session of user in app; the returned func
	// removes it. A router between nodes may wait, for a bounded time,
	// until the other nodes route the user's events to this one, so that
	// an event of a message committed after Register returns is not lost.
	Register(app, user string, r Receiver) (unregister func())
	// Deliver hands ev to every registered session of each of users in app.
	// Delivery is best-effort and never blocks; stored messages that a
	// session misses are read from the store on its next catch-up.
	Deliver(app string, users []string, ev Event)
	// Broadcast hands ev to the listeners of every node, this one
	// included. It is best-effort and never blocks.
	Broadcast(app string, ev Event)
	// Listen adds l as a listener of this node; the returned func removes it.
	Listen(l Listener) (stop func())
}

// LocalRouter is a Router for a single process. The zero value is ready to
// use.
type LocalRouter struct {
	mu        sync.RWMutex
	users     map[userKey][]*localReg // guarded by mu; copy-on-write slices
	listeners Listeners
}

type userKey struct{ app, user string }

// localReg is one registration: unregister finds it by its address, so
// that a Receiver need not be comparable.
type localReg struct{ rc Receiver }

// Register implements Router.
func (r *LocalRouter) Register(app, user string, rc Receiver) func() {
	k := userKey{app, user}
	reg := &localReg{rc}
	r.mu.Lock()
	if r.users == nil {
		r.users = make(map[userKey][]*localReg)
	}
	old := r.users[k]
	next := make([]*localReg, 0, len(old)+1)
	next = append(append(next, old...), reg)
	r.users[k] = next
	r.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			r.mu.Lock()
			defer r.mu.Unlock()
			old := r.users[k]
			next := make([]*localReg, 0, len(old))
			for _, x := range old {
				if x != reg {
					next = append(next, x)
				}
			}
			if len(next) == 0 {
				delete(r.users, k)
			} else {
				r.users[k] = next
			}
		})
	}
}

// Deliver implements Router.
func (r *LocalRouter) Deliver(app string, users []string, ev Event) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, u := range users {
		for _, reg := range r.users[userKey{app, u}] {
			reg.rc.Receive(ev)
		}
	}
}

// Broadcast implements Router: there is only this node.
func (r *LocalRouter) Broadcast(app string, ev Event) { r.listeners.ReceiveNode(app, ev) }

// Listen implements Router. A LocalRouter has no other node, so its
// listeners hear only broadcasts, and never Missed.
func (r *LocalRouter) Listen(l Listener) func() { return r.listeners.Add(l) }

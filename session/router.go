package session

import (
	"sync"
	"time"

	qimpb "github.com/qim-im/qim/proto"
)

// Event is what the router carries to a user's sessions.
type Event struct {
	// Msg is a message of one of the user's conversations, stored (Seq > 0)
	// or not (Seq == 0).
	Msg *qimpb.Message
	// Read is when Msg was read off its sender's stream, for the delivery
	// latency metric; zero when metrics are off.
	Read time.Time
	// frame, set by the Hub when it routes Msg, is Msg's push frame,
	// encoded once for all its receivers. A Router that carries Events
	// between processes leaves it nil, and each pusher encodes its own.
	frame *pushFrame
	// conv, set by the Hub when it routes Msg, is Msg's conversation, so
	// that receivers need not work it out again.
	conv string
	// Revoke names a conversation the user lost access to (kicked from or
	// left a group): its pushes stop at once.
	Revoke string
	// ReplaceDevice, when set, asks the session of that device to close with
	// REPLACED unless it is Except.
	ReplaceDevice string
	Except        Receiver
	// ReplaceBefore, with ReplaceDevice, is the order in which the hub
	// opened the announcing session: only sessions it opened earlier close.
	ReplaceBefore uint64
}

// Receiver is a connected session as the router sees it.
type Receiver interface {
	// Receive hands an event to the session. It must not block: the router
	// calls it from the commit path.
	Receive(ev Event)
}

// Router carries events to the sessions of users, wherever they are
// connected. LocalRouter serves one process; a multi-node router (NATS) can
// implement the same interface.
type Router interface {
	// Register adds r as a session of user in app; the returned func removes it.
	Register(app, user string, r Receiver) (unregister func())
	// Deliver hands ev to every registered session of each of users in app.
	// Delivery is best-effort and never blocks; stored messages that a
	// session misses are read from the store on its next catch-up.
	Deliver(app string, users []string, ev Event)
}

// LocalRouter is a Router for a single process. The zero value is ready to
// use.
type LocalRouter struct {
	mu    sync.RWMutex
	users map[userKey][]Receiver // guarded by mu; copy-on-write slices
}

type userKey struct{ app, user string }

// Register implements Router.
func (r *LocalRouter) Register(app, user string, rc Receiver) func() {
	k := userKey{app, user}
	r.mu.Lock()
	if r.users == nil {
		r.users = make(map[userKey][]Receiver)
	}
	old := r.users[k]
	next := make([]Receiver, 0, len(old)+1)
	next = append(append(next, old...), rc)
	r.users[k] = next
	r.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			r.mu.Lock()
			defer r.mu.Unlock()
			old := r.users[k]
			next := make([]Receiver, 0, len(old))
			for _, x := range old {
				if x != rc {
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
		for _, rc := range r.users[userKey{app, u}] {
			rc.Receive(ev)
		}
	}
}

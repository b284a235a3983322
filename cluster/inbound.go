package cluster

import (
	"github.com/nats-io/nats.go"

	"github.com/qim-im/qim/core"
)

// receiveLoop hands what arrives from NATS to this node's sessions and
// listeners until Close. It runs in its own goroutine.
//
// Before each message it checks whether the channel is full: nats.go
// drops what arrives at a full channel, and reports it (as a slow
// consumer) only the first time for each subscription until that one
// delivers again; a drop always leaves the channel full until this
// goroutine next takes from it, so a full channel tells the listeners
// they may have missed events even when nats.go does not.
func (r *NATSRouter) receiveLoop() {
	full := false
	for {
		if len(r.in) == cap(r.in) {
			if !full {
				full = true
				r.stats.droppedIn.Add(1)
				r.logger.Warn("cluster: inbound channel full, events may be dropped", "capacity", cap(r.in))
			}
			r.triggerMissed()
		} else {
			full = false
		}
		select {
		case <-r.done:
			return
		case m := <-r.in:
			r.handle(m)
		}
	}
}

// handle hands one message from NATS to whom it concerns.
func (r *NATSRouter) handle(m *nats.Msg) {
	r.stats.received.Add(1)
	switch m.Subject {
	case r.subj.broadcast:
		app, node, ev, err := decodeEvent(m.Data)
		if err != nil {
			r.undecodable(m, err)
			return
		}
		if node == r.node {
			return // our own, heard on a connection without NoEcho
		}
		r.listeners.ReceiveNode(app, ev)
	case r.subj.fanout:
		app, node, ev, users, err := decodeEventUsers(m.Data)
		if err != nil {
			r.undecodable(m, err)
			return
		}
		if node == r.node {
			return
		}
		here := false
		for _, u := range users {
			if r.receiveRemote(app, u, ev) {
				here = true
			}
		}
		if !here {
			return
		}
		r.listeners.ReceiveNode(app, ev)
	case r.subj.missed:
		node, dropped, err := decodeMissed(m.Data)
		if err != nil {
			r.undecodable(m, err)
			return
		}
		if node == r.node {
			return
		}
		r.stats.missedReceived.Add(1)
		r.logger.Info("cluster: another node reports possibly lost events", "from", node, "dropped", dropped)
		r.triggerMissed()
	default:
		user, ok := r.subj.userOf(m.Subject)
		if !ok {
			r.undecodable(m, nil)
			return
		}
		app, node, ev, err := decodeEvent(m.Data)
		if err != nil {
			r.undecodable(m, err)
			return
		}
		if node == r.node {
			return
		}
		if !r.receiveRemote(app, user, ev) {
			return
		}
		r.listeners.ReceiveNode(app, ev)
	}
}

// receiveRemote hands ev, from another node, to the sessions of user in
// app on this node, and reports whether there were any.
func (r *NATSRouter) receiveRemote(app, user string, ev core.Event) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e := r.users[userKey{app, user}]
	if e == nil {
		return false
	}
	for _, s := range e.sessions {
		s.rc.Receive(ev)
	}
	return true
}

// undecodable counts and logs a message that is not what its subject
// says it is.
func (r *NATSRouter) undecodable(m *nats.Msg, err error) {
	r.stats.undecodable.Add(1)
	if err != nil {
		r.logger.Warn("cluster: undecodable message", "subject", m.Subject, "err", err)
	} else {
		r.logger.Warn("cluster: message on an unknown subject", "subject", m.Subject)
	}
}

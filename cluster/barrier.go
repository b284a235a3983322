package cluster

import (
	"time"

	"github.com/nats-io/nats.go"
)

// Register must not return before the NATS servers of the other nodes
// route the user's events to this node, or an event committed meanwhile
// on another node would reach neither the session's read of the store
// (which follows Register) nor the session. A NATS server tells the other
// servers of a subscription asynchronously, so a flush (a round trip to
// this node's server) is not enough. Instead the router sends a barrier:
// a request on P.sync, after the subscription on the same connection,
// that every other node answers. The server passes the subscription on
// before the request, on the same route connection, and the servers
// process what a route brings in order: once a node has answered, its
// server has the subscription. The router waits for the nodes it heard
// from recently (heartbeats on P.node, members.go), up to
// RouterConfig.RegisterTimeout; a barrier covers every registration that
// subscribed before it was sent, so registrations that come together
// share one.

// syncCheck is how often a barrier stops waiting for nodes that expired.
const syncCheck = 100 * time.Millisecond

// awaitSync waits until a barrier sent after the caller's subscription
// has been answered, or RegisterTimeout has passed (twice, as the caller
// may first wait for the barrier in flight). It does not wait when the
// connection is down: the subscription is made on reconnection, and
// listeners are then told they missed events.
func (r *NATSRouter) awaitSync() {
	if !r.nc.IsConnected() {
		return
	}
	ch := make(chan struct{})
	r.syncMu.Lock()
	r.syncWaiters = append(r.syncWaiters, ch)
	r.syncMu.Unlock()
	select {
	case r.syncWake <- struct{}{}:
	default:
	}
	t := time.NewTimer(2 * r.registerTimeout)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-r.done:
	}
}

// syncLoop announces this node (a hello at start and after a reconnection,
// then a heartbeat every interval) and sends barriers for waiting
// registrations and after a reconnection, until Close. It runs in its own
// goroutine.
func (r *NATSRouter) syncLoop() {
	tick := time.NewTicker(r.heartbeat)
	defer tick.Stop()
	r.announce(true, false)
	for {
		select {
		case <-r.done:
			return
		case <-tick.C:
			r.announce(false, false)
			continue
		case <-r.syncWake:
		}
		// After a (re)connection, nats.go has made the subscriptions
		// again, and the other nodes' servers learn of them
		// asynchronously: once a barrier has been answered, the
		// listeners are told (again) that they may have missed events.
		hello := r.helloPending.Swap(false)
		if hello {
			r.announce(true, false)
		}
		r.syncMu.Lock()
		waiters := r.syncWaiters
		r.syncWaiters = nil
		r.syncMu.Unlock()
		if len(waiters) == 0 && !hello {
			continue
		}
		r.barrier(tick.C)
		for _, ch := range waiters {
			close(ch)
		}
		if hello {
			r.triggerMissed()
		}
	}
}

// barrier sends a barrier request and waits until every live node has
// answered, the nodes that did not have expired, or RegisterTimeout has
// passed. With no other node, it waits for this node's server only (a
// flush). It keeps up the heartbeats meanwhile.
func (r *NATSRouter) barrier(tick <-chan time.Time) {
	if !r.nc.IsConnected() {
		return
	}
	peers := r.members.live(time.Now())
	if len(peers) == 0 {
		r.confirm()
		return
	}
	r.syncID++
	id := r.syncID
	pending := make(map[string]bool, len(peers))
	for _, p := range peers {
		pending[p] = true
	}
	data, err := encodeSync(r.node, id)
	if err == nil {
		err = r.nc.PublishRequest(r.subj.sync, r.subj.syncReplySubject(r.node), data)
	}
	if err != nil {
		r.logger.Warn("cluster: barrier", "err", err)
		r.triggerMissed()
		return
	}
	deadline := time.NewTimer(r.registerTimeout)
	defer deadline.Stop()
	check := time.NewTicker(syncCheck)
	defer check.Stop()
	for len(pending) > 0 {
		select {
		case rep := <-r.syncReplies:
			if rep.id == id {
				delete(pending, rep.node)
			}
		case now := <-check.C:
			for p := range pending {
				if !r.members.isLive(p, now) {
					delete(pending, p)
				}
			}
		case <-tick:
			r.announce(false, false)
		case <-deadline.C:
			r.logger.Warn("cluster: barrier not answered in time", "nodes", len(pending), "timeout", r.registerTimeout)
			r.triggerMissed()
			return
		case <-r.done:
			return
		}
	}
}

// syncReply is an answer to one of this node's barriers.
type syncReply struct {
	node string
	id   uint64
}

// announce publishes this node's heartbeat: a hello (every node answers
// with its own heartbeat), a plain one, or its leaving.
func (r *NATSRouter) announce(hello, leaving bool) {
	data, err := encodeNode(r.node, hello, leaving)
	if err == nil {
		err = r.nc.Publish(r.subj.node, data)
	}
	if err != nil {
		r.logger.Warn("cluster: heartbeat", "err", err)
	}
}

// onNode handles another node's heartbeat. It runs in a goroutine of
// nats.go.
func (r *NATSRouter) onNode(m *nats.Msg) {
	n, err := decodeNode(m.Data)
	if err != nil {
		r.undecodable(m, err)
		return
	}
	if n.Node == r.node {
		return
	}
	if n.Leaving {
		r.members.left(n.Node)
		r.logger.Info("cluster: node left", "peer", n.Node)
		return
	}
	if r.members.heard(n.Node, time.Now()) {
		r.logger.Info("cluster: node joined", "peer", n.Node)
	}
	if n.Hello {
		r.announce(false, false)
	}
}

// onSync answers another node's barrier. It runs in a goroutine of
// nats.go.
func (r *NATSRouter) onSync(m *nats.Msg) {
	node, id, err := decodeSync(m.Data)
	if err != nil {
		r.undecodable(m, err)
		return
	}
	if node == r.node || m.Reply == "" {
		return
	}
	r.members.heard(node, time.Now())
	data, err := encodeSync(r.node, id)
	if err == nil {
		err = r.nc.Publish(m.Reply, data)
	}
	if err != nil {
		r.logger.Warn("cluster: answer barrier", "peer", node, "err", err)
	}
}

// onSyncReply hands an answer to this node's barrier to syncLoop. It runs
// in a goroutine of nats.go.
func (r *NATSRouter) onSyncReply(m *nats.Msg) {
	node, id, err := decodeSync(m.Data)
	if err != nil {
		r.undecodable(m, err)
		return
	}
	r.members.heard(node, time.Now())
	select {
	case r.syncReplies <- syncReply{node, id}:
	default: // a stale flood; the barrier times out at worst
	}
}

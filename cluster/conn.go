package cluster

import (
	"errors"

	"github.com/nats-io/nats.go"
)

// The handlers of the NATS connection's events. nats.go calls them from
// its own goroutine, one at a time; none of them blocks for long.

// connected is called when the connection is first established. If the
// router was made before (nats.RetryOnFailedConnect), the subscriptions
// of sessions registered in the meantime were not in effect: the
// listeners are told they may have missed events.
func (r *NATSRouter) connected(nc *nats.Conn) {
	<-r.started
	if r.startedConn {
		return
	}
	r.logger.Info("cluster: connected to NATS", "server", nc.ConnectedUrlRedacted())
	r.triggerMissed()
	r.wakeHello()
}

// disconnected is called when the connection breaks, or is closed.
func (r *NATSRouter) disconnected(_ *nats.Conn, err error) {
	select {
	case <-r.done:
		return // Close closed it
	default:
	}
	if err != nil {
		r.logger.Warn("cluster: disconnected from NATS", "err", err)
	} else {
		r.logger.Warn("cluster: disconnected from NATS")
	}
}

// reconnected is called when the connection is re-established (nats.go
// has made the subscriptions again). Events addressed to this node in the
// meantime were lost, and so may have been events this node published
// just before the break (in the buffers of a dying server): the listeners
// are told, and the other nodes too.
func (r *NATSRouter) reconnected(nc *nats.Conn) {
	r.stats.reconnects.Add(1)
	r.logger.Info("cluster: reconnected to NATS", "server", nc.ConnectedUrlRedacted())
	r.triggerMissed()
	r.reportReconnect.Store(true)
	r.out.signal()
	r.wakeHello()
}

// wakeHello has syncLoop publish a hello: the other nodes may have taken
// this one for gone, and it may have missed their heartbeats.
func (r *NATSRouter) wakeHello() {
	r.helloPending.Store(true)
	select {
	case r.syncWake <- struct{}{}:
	default:
	}
}

// asyncError is called for errors that no call returned: a slow consumer
// (the inbound channel was full, and nats.go dropped what arrived for
// sub), or an error of the server (a permission violation, ...).
func (r *NATSRouter) asyncError(_ *nats.Conn, sub *nats.Subscription, err error) {
	if errors.Is(err, nats.ErrSlowConsumer) {
		r.stats.droppedIn.Add(1)
		subject := ""
		if sub != nil {
			subject = sub.Subject
		}
		r.logger.Warn("cluster: inbound channel full, events dropped", "subject", subject, "capacity", cap(r.in))
		r.triggerMissed()
		return
	}
	r.logger.Error("cluster: NATS error", "err", err)
}

// connClosed is called when the connection is closed for good.
func (r *NATSRouter) connClosed(*nats.Conn) {
	r.logger.Info("cluster: NATS connection closed")
}

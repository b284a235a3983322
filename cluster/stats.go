package cluster

import "sync/atomic"

// Stats are the counters of a NATSRouter since it was created, for
// metrics. Every field but Subscriptions only grows.
type Stats struct {
	// Published counts the messages published on NATS: one per user
	// addressed by a Deliver, one per Broadcast, one per missed report.
	Published uint64
	// Received counts the messages received from NATS: events and missed
	// reports of other nodes.
	Received uint64
	// DroppedOut counts the events (one per addressed user, as Published)
	// that were not published: the outgoing queue was full, or NATS
	// refused them (its reconnect buffer full, payload over its limit).
	DroppedOut uint64
	// DroppedIn counts the overflows of the inbound channel: the times
	// nats.go reported a slow consumer and the times the receiving
	// goroutine found the channel full. Each may stand for several events
	// lost (nats.go does not say how many).
	DroppedIn uint64
	// Undecodable counts the messages received that did not decode.
	Undecodable uint64
	// MissedSent counts the missed reports this node published.
	MissedSent uint64
	// MissedReceived counts the missed reports of other nodes it received.
	MissedReceived uint64
	// MissedCalls counts the times this node's listeners were told they
	// may have missed events (core.Listener.Missed), after coalescing.
	MissedCalls uint64
	// Reconnects counts the reconnections to NATS.
	Reconnects uint64
	// Subscriptions is the number of users (app, user) with a session on
	// this node, that is of NATS subscriptions for them.
	Subscriptions int64
}

// counters are the atomic counters behind Stats.
type counters struct {
	published, received, droppedOut, droppedIn, undecodable atomic.Uint64
	missedSent, missedReceived, missedCalls, reconnects     atomic.Uint64
	subscriptions                                           atomic.Int64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Published:      c.published.Load(),
		Received:       c.received.Load(),
		DroppedOut:     c.droppedOut.Load(),
		DroppedIn:      c.droppedIn.Load(),
		Undecodable:    c.undecodable.Load(),
		MissedSent:     c.missedSent.Load(),
		MissedReceived: c.missedReceived.Load(),
		MissedCalls:    c.missedCalls.Load(),
		Reconnects:     c.reconnects.Load(),
		Subscriptions:  c.subscriptions.Load(),
	}
}

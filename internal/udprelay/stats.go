package udprelay

import "sync/atomic"

// Stats counts datagrams in each direction since New.
type Stats struct {
	ClientToServer DirectionStats
	ServerToClient DirectionStats
	// Flows is the number of client flows currently open.
	Flows int
}

// DirectionStats counts the datagrams of one direction. Once the relay is
// idle, Received + Duplicated = Forwarded + Dropped + QueueFull + Errors.
type DirectionStats struct {
	// Received counts datagrams read from the sender.
	Received uint64
	// Forwarded counts datagrams written to the receiver, duplicates
	// included.
	Forwarded uint64
	// Dropped counts datagrams discarded by Loss, HandshakeLoss or Blackhole.
	Dropped uint64
	// Duplicated counts the extra copies made by Duplicate.
	Duplicated uint64
	// Reordered counts datagrams held back by Reorder and sent after a later
	// one.
	Reordered uint64
	// QueueFull counts datagrams dropped because MaxQueue were waiting.
	QueueFull uint64
	// Errors counts datagrams lost to socket errors or to the MaxFlows
	// limit.
	Errors uint64
}

// counters are the statistics of one direction, updated atomically.
type counters struct {
	received   atomic.Uint64
	forwarded  atomic.Uint64
	dropped    atomic.Uint64
	duplicated atomic.Uint64
	reordered  atomic.Uint64
	queueFull  atomic.Uint64
	errors     atomic.Uint64
}

// snapshot returns the current counts.
func (c *counters) snapshot() DirectionStats {
	return DirectionStats{
		Received:   c.received.Load(),
		Forwarded:  c.forwarded.Load(),
		Dropped:    c.dropped.Load(),
		Duplicated: c.duplicated.Load(),
		Reordered:  c.reordered.Load(),
		QueueFull:  c.queueFull.Load(),
		Errors:     c.errors.Load(),
	}
}

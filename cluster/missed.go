package cluster

import "time"

// triggerMissed has the listeners told, soon, that they may have missed
// events. It never blocks.
func (r *NATSRouter) triggerMissed() {
	select {
	case r.missedTrigger <- struct{}{}:
	default:
	}
}

// missedLoop calls every listener's Missed when triggered, at most once
// per missed interval: the triggers of an interval are coalesced into one
// call at its end. It runs in its own goroutine until Close.
func (r *NATSRouter) missedLoop() {
	t := time.NewTimer(r.missedInterval)
	t.Stop()
	defer t.Stop()
	for {
		select {
		case <-r.done:
			return
		case <-r.missedTrigger:
		}
		r.listeners.Missed()
		r.stats.missedCalls.Add(1)
		t.Reset(r.missedInterval)
		select {
		case <-r.done:
			return
		case <-t.C:
		}
	}
}

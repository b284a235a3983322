package core

import "time"

// De-duplication retention. The store remembers each message's
// (sender, client_msg_id) so that a retry is answered with the original
// (store.Store.Append); the hub has it forget the entries older than
// Config.DedupWindow, so that the index does not grow without bound. A
// retry after the window is stored again, as a new message.

// defaultDedupWindow is the de-duplication window when Config.DedupWindow
// is zero.
const defaultDedupWindow = 7 * 24 * time.Hour

// firstPrune is how long after NewHub the first prune runs, at most: soon,
// so that a server restarted often still prunes, but not in the middle of
// its start.
const firstPrune = time.Minute

// pruneEvery returns how often the index is pruned for window: a
// twenty-fourth of it (so that it holds at most about 1/24 beyond the
// window), at most hourly and at least every second.
func pruneEvery(window time.Duration) time.Duration {
	return max(min(window/24, time.Hour), time.Second)
}

// pruneLoop prunes the de-duplication index every pruneEvery(window), the
// first time after min(that, firstPrune), until Close. It runs in its own
// goroutine, in h.wg.
func (h *Hub) pruneLoop(window time.Duration) {
	every := pruneEvery(window)
	t := time.NewTimer(min(every, firstPrune))
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-h.stop:
			return
		}
		h.pruneDedup(window)
		t.Reset(every)
	}
}

// pruneDedup has the store forget the de-duplication entries of messages
// older than window. A failure is logged, never fatal: the next run tries
// again.
func (h *Hub) pruneDedup(window time.Duration) {
	start := time.Now()
	n, err := h.store.PruneDedup(h.ctx, h.now().Add(-window))
	switch {
	case err != nil && h.ctx.Err() != nil:
		// Close interrupted it.
	case err != nil:
		h.logger.Error("prune the de-duplication index; retrying at the next run", "err", err)
	case n > 0:
		h.logger.Info("pruned the de-duplication index", "entries", n, "window", window, "took", time.Since(start))
	default:
		h.logger.Debug("pruned the de-duplication index", "entries", 0, "took", time.Since(start))
	}
}

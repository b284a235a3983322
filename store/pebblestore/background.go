package pebblestore

import (
	"log/slog"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Pebble retries a failed flush or compaction at once and forever (its code
// says "TODO: count consecutive flush errors and backoff"). On a full or
// read-only disk that is a loop that burns a core and, with Pebble's logging
// listener, writes a log line per attempt (about 18 MB in 10 minutes). Worse,
// Open flushes the log it replays and waits for that flush, so a store whose
// disk is full never finishes opening.
//
// backgroundErrors is the Store's EventListener.BackgroundError. Pebble calls
// it on the failing goroutine after each failed attempt, before retrying, so
// it paces the retries:
//
//   - while Open is running, the first background error makes Open give up
//     with that error (see OpenContext). The flush goroutine that reported it
//     is then parked for good: Pebble cannot be told to stop retrying, and the
//     caller is expected to exit;
//   - once open, it sleeps before each retry, 10 ms doubling up to 1 s, and
//     wakes at once when Close begins;
//   - it logs the first error of a run, then at most one line per 10 s with
//     the number of errors in between, and a line when Pebble succeeds again.
type backgroundErrors struct {
	// Static after construction.
	logger  *slog.Logger
	closing chan struct{} // closed when the Store closes
	failed  chan struct{} // closed by the first error while opening

	closeOnce sync.Once // closes closing

	mu          sync.Mutex
	opened      bool      // Open has returned the database; guarded by mu
	openErr     error     // the error that closed failed; guarded by mu
	consecutive int       // errors since the last success; guarded by mu
	lastLog     time.Time // guarded by mu
	unlogged    int       // errors since lastLog not logged; guarded by mu
}

// backgroundLogEvery is how often a run of background errors is logged.
const backgroundLogEvery = 10 * time.Second

func newBackgroundErrors(logger *slog.Logger) *backgroundErrors {
	return &backgroundErrors{logger: logger, closing: make(chan struct{}), failed: make(chan struct{})}
}

// listener returns Pebble's logging listener with background errors and
// successes routed to b.
func (b *backgroundErrors) listener(l pebble.Logger) *pebble.EventListener {
	el := pebble.MakeLoggingEventListener(l)
	el.BackgroundError = b.report
	flushEnd, compactionEnd := el.FlushEnd, el.CompactionEnd
	el.FlushEnd = func(info pebble.FlushInfo) {
		flushEnd(info)
		if info.Err == nil {
			b.succeeded()
		}
	}
	el.CompactionEnd = func(info pebble.CompactionInfo) {
		compactionEnd(info)
		if info.Err == nil {
			b.succeeded()
		}
	}
	return &el
}

// report handles one failed background operation; see backgroundErrors.
func (b *backgroundErrors) report(err error) {
	b.mu.Lock()
	b.consecutive++
	n := b.consecutive
	if !b.opened {
		if b.openErr == nil {
			b.openErr = err
			close(b.failed)
		}
		b.mu.Unlock()
		// Returning would make Pebble retry at once, for ever; OpenContext
		// has given up on this database.
		select {}
	}
	now := time.Now()
	if n == 1 || now.Sub(b.lastLog) >= backgroundLogEvery {
		b.logger.Error("pebble: background error; retrying with backoff", "err", err, "errors_since_last_line", b.unlogged, "consecutive", n)
		b.lastLog, b.unlogged = now, 0
	} else {
		b.unlogged++
	}
	b.mu.Unlock()

	t := time.NewTimer(min(10*time.Millisecond<<min(n-1, 10), time.Second))
	defer t.Stop()
	select {
	case <-t.C:
	case <-b.closing:
	}
}

// succeeded records that a flush or compaction worked.
func (b *backgroundErrors) succeeded() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.consecutive > 0 && b.opened {
		b.logger.Info("pebble: background work succeeds again", "after_errors", b.consecutive)
	}
	b.consecutive = 0
}

// openSucceeded records that Open returned: from now on errors are retried.
func (b *backgroundErrors) openSucceeded() {
	b.mu.Lock()
	b.opened = true
	b.mu.Unlock()
}

// openError returns the error that closed failed.
func (b *backgroundErrors) openError() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.openErr
}

// close wakes a report that is waiting to retry; called when the Store
// closes.
func (b *backgroundErrors) close() { b.closeOnce.Do(func() { close(b.closing) }) }

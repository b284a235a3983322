// Package push wakes the phones of users who are offline: for every stored
// message that some recipient has received on none of their devices, a
// Worker POSTs a signed JSON notification (qimpb.PushNotification) to the
// application's own push gateway, which passes it on to APNs or FCM.
//
// The work comes from the store's durable outbox (store.PushJob): the hub
// adds a job for each stored message in the same write as the message,
// due a short delay later (core.Config.PushDelay). When a job comes due,
// the worker works out who is still to be woken: the addressee of a 1:1
// message, or the group's current members, but not the sender, and not
// the users some device of whom has acknowledged the message by then
// (an online device does within milliseconds; the acknowledgements are in
// the store, so this holds across a cluster). It stores that list in the
// job, so that a restart does not change it, then sends one notification
// per user, and removes the job once each has been accepted by the gateway
// or given up.
//
// Delivery is at least once: a notification whose answer was lost, or
// whose job's worker stopped before it removed the job, is sent again,
// with the same id (the Idempotency-Key header), which the gateway uses
// to drop the copies. A failed attempt is retried with an exponential
// backoff; a notification whose message is older than MaxAge, or that the
// gateway refused with a client error, is given up (and counted).
//
// Gateways check the Qim-Signature header with Verify; examples/pushgateway
// is a small one.
package push

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qim-im/qim/metrics"
	"github.com/qim-im/qim/store"
)

// Config configures a Worker. Zero values take the documented defaults.
type Config struct {
	// Store holds the outbox, the messages, the groups' members and the
	// devices' acknowledgements. Required.
	Store store.Store
	// URL is the push gateway's address, http or https, which every
	// notification is POSTed to. Required.
	URL string
	// Secret signs every notification (SignatureHeader); the gateway has
	// the same. Required.
	Secret []byte
	// Preview puts the beginning of each message in its notification
	// (Preview). False leaves the preview empty: the gateway, and APNs or
	// FCM after it, learn who wrote to whom, not what.
	Preview bool
	// Logger receives the worker's logs. Nil discards them.
	Logger *slog.Logger
	// Metrics counts the notifications sent, failed and given up, and
	// exports the outbox's backlog. Nil records nothing.
	Metrics *metrics.Metrics
	// Client sends the requests. Nil means a client with a 10 s timeout
	// that does not follow redirects (a redirect counts as a failure) and
	// keeps up to Concurrency connections to the gateway open, on a
	// transport of its own whose idle connections Run closes when it
	// returns.
	Client *http.Client
	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
	// Concurrency bounds the requests in flight, and the jobs being worked
	// on. Zero means 8.
	Concurrency int
	// MaxAge is how old a message may be when its notification is sent:
	// one whose turn comes later (the gateway has been failing for that
	// long) is given up. Zero means 24 hours.
	MaxAge time.Duration
	// MinBackoff and MaxBackoff bound the delay before a job whose
	// notifications failed is tried again: MinBackoff after the first
	// failure, doubling at each failure up to MaxBackoff, each delay
	// between half of that and all of it (jitter), or longer if the
	// gateway asked for it (Retry-After) but never beyond MaxBackoff.
	// Zero means 1 second and 5 minutes.
	MinBackoff, MaxBackoff time.Duration
	// Lease is how long a job this worker took from the outbox stays its
	// own: if the worker has neither finished nor rescheduled it by then
	// (it crashed), the job is due again for any worker. A job's requests
	// are given three quarters of it. Zero means 1 minute.
	Lease time.Duration
	// PollEvery is how often the worker looks for due jobs when nothing
	// wakes it (Wake). Zero means 1 second.
	PollEvery time.Duration
}

// Worker sends the notifications of the outbox's due jobs. Create it with
// New and run it with Run.
type Worker struct {
	// Static after New.
	store       store.Store
	url         string
	secret      []byte
	preview     bool
	logger      *slog.Logger
	metrics     *metrics.Metrics
	client      *http.Client
	transport   *http.Transport // the transport of the default client; nil with Config.Client
	now         func() time.Time
	concurrency int
	maxAge      time.Duration
	minBackoff  time.Duration
	maxBackoff  time.Duration
	lease       time.Duration
	pollEvery   time.Duration

	requests chan struct{} // a slot per request in flight
	wake     chan struct{} // Wake's signal to Run; buffered, 1
	running  atomic.Bool   // Run has been called
	failing  atomic.Bool   // the last request failed (logged once per change)
}

// maxUsersPerPass bounds the users one job sends to between two writes of
// the job, so that a group's job records its progress as it goes and a
// pass stays well within the lease.
const maxUsersPerPass = 64

// New returns a worker for cfg. It starts nothing: Run does.
func New(cfg Config) (*Worker, error) {
	if cfg.Store == nil {
		return nil, errors.New("push: Config.Store is nil")
	}
	if len(cfg.Secret) == 0 {
		return nil, errors.New("push: Config.Secret is empty")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("push: gateway URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("push: gateway URL %q: want http://HOST/... or https://HOST/...", cfg.URL)
	}
	w := &Worker{
		store:       cfg.Store,
		url:         cfg.URL,
		secret:      cfg.Secret,
		preview:     cfg.Preview,
		logger:      cfg.Logger,
		metrics:     cfg.Metrics,
		client:      cfg.Client,
		now:         cfg.Now,
		concurrency: cmp.Or(max(cfg.Concurrency, 0), 8),
		maxAge:      cmp.Or(max(cfg.MaxAge, 0), 24*time.Hour),
		minBackoff:  cmp.Or(max(cfg.MinBackoff, 0), time.Second),
		maxBackoff:  cmp.Or(max(cfg.MaxBackoff, 0), 5*time.Minute),
		lease:       cmp.Or(max(cfg.Lease, 0), time.Minute),
		pollEvery:   cmp.Or(max(cfg.PollEvery, 0), time.Second),
		wake:        make(chan struct{}, 1),
	}
	w.maxBackoff = max(w.maxBackoff, w.minBackoff)
	w.requests = make(chan struct{}, w.concurrency)
	if w.logger == nil {
		w.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if w.now == nil {
		w.now = time.Now
	}
	if w.client == nil {
		// A transport of its own, which keeps a connection per request in
		// flight (the default keeps 2 per host), and which Run empties.
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = w.concurrency
		w.transport = tr
		w.client = &http.Client{
			Transport: tr,
			Timeout:   10 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	}
	return w, nil
}

// Wake makes Run look for due jobs now instead of at its next poll. It
// never blocks and may be called from any goroutine.
func (w *Worker) Wake() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Run takes due jobs from the outbox and sends their notifications until
// ctx ends, then waits for the jobs it is working on, which give up their
// requests and leave their remaining users due at once for the next
// worker. It exports the backlog gauge while it runs. It returns nil
// when ctx ends; it may be called once.
func (w *Worker) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("push: Run called twice")
	}
	defer w.metrics.WatchPushBacklog(w.backlog)()
	w.logger.Info("sending push notifications", "url", w.url, "preview", w.preview)

	if w.transport != nil {
		defer w.transport.CloseIdleConnections()
	}
	var jobs sync.WaitGroup
	defer jobs.Wait()
	done := make(chan struct{}, w.concurrency) // a job ended; never blocks
	inFlight := 0
	due := true     // look for due jobs at the next turn
	more := false   // the last claim took all it could: there may be more
	storeOK := true // the last claim succeeded (logged once per change)
	poll := time.NewTimer(w.pollEvery)
	defer poll.Stop()
	for {
		if free := w.concurrency - inFlight; due && free > 0 {
			due = false
			claimed, err := w.store.ClaimPush(ctx, w.now(), w.lease, free)
			switch {
			case err != nil && ctx.Err() == nil && storeOK:
				w.logger.Error("push: read the outbox; retrying every poll", "err", err)
				storeOK = false
			case err == nil && !storeOK:
				w.logger.Info("push: the outbox can be read again")
				storeOK = true
			}
			more = len(claimed) == free
			for _, job := range claimed {
				inFlight++
				jobs.Go(func() {
					defer func() { done <- struct{}{} }()
					w.work(ctx, job)
				})
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-done:
			inFlight--
			due = due || more
		case <-poll.C:
			due = true
			poll.Reset(w.pollEvery)
		case <-w.wake:
			due = true
		}
	}
}

// backlog returns the outbox's size for the backlog gauge, NaN if the
// store does not answer within a second.
func (w *Worker) backlog() float64 {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	n, err := w.store.PushBacklog(ctx)
	if err != nil {
		return math.NaN()
	}
	return float64(n)
}

// backoff returns the delay before the attempt that follows failed
// attempt number attempt (1 for the first failure), with jitter, and not
// less than retryAfter (the gateway's wish), all within MaxBackoff.
func (w *Worker) backoff(attempt int, retryAfter time.Duration) time.Duration {
	d := w.minBackoff
	for i := 1; i < attempt && d < w.maxBackoff; i++ {
		d *= 2
	}
	d = min(d, w.maxBackoff)
	d = d/2 + jitter(d/2)
	return min(max(d, retryAfter), w.maxBackoff)
}

package metrics

import "github.com/prometheus/client_golang/prometheus"

// PushDrop says why a push notification was given up (Metrics.PushDropped).
type PushDrop int

const (
	// PushRejected: the push gateway answered with a client error other
	// than 408 or 429, which another attempt would get too.
	PushRejected PushDrop = iota
	// PushExpired: the message was older than the push worker's MaxAge
	// when its turn came (the gateway had been failing for that long).
	PushExpired
	numPushDrops
)

var pushDropNames = [numPushDrops]string{PushRejected: "rejected", PushExpired: "expired"}

// pushMetrics are the counters of the offline-push worker (package push).
type pushMetrics struct {
	sent    prometheus.Counter
	failed  prometheus.Counter
	dropped [numPushDrops]prometheus.Counter
}

// newPushMetrics registers the push counters with reg.
func newPushMetrics(reg prometheus.Registerer) pushMetrics {
	var p pushMetrics
	p.sent = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "qim_push_sent_total",
		Help: "Push notifications the push gateway accepted (a 2xx answer); a notification sent again after a lost answer counts again.",
	})
	p.failed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "qim_push_failures_total",
		Help: "Attempts to send a push notification that failed and will be retried (network error, timeout, 5xx, 408, 429).",
	})
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "qim_push_dropped_total",
		Help: `Push notifications given up, by reason: "rejected" (the gateway answered another 4xx) or "expired" (the message was older than the worker's maximum age).`,
	}, []string{"reason"})
	reg.MustRegister(p.sent, p.failed, dropped)
	for d, name := range pushDropNames {
		p.dropped[d] = dropped.WithLabelValues(name)
	}
	return p
}

// PushSent counts a push notification the gateway accepted.
func (m *Metrics) PushSent() {
	if m != nil {
		m.push.sent.Inc()
	}
}

// PushFailed counts a failed attempt to send a push notification that will
// be retried.
func (m *Metrics) PushFailed() {
	if m != nil {
		m.push.failed.Inc()
	}
}

// PushDropped counts a push notification given up for reason d.
func (m *Metrics) PushDropped(d PushDrop) {
	if m != nil && d >= 0 && d < numPushDrops {
		m.push.dropped[d].Inc()
	}
}

// WatchPushBacklog exports backlog, read at every scrape, as the
// qim_push_backlog gauge: the jobs in the store's push outbox. backlog
// must be safe to call from any goroutine and return soon; NaN says it
// could not tell. The returned function removes the gauge. A nil m does
// nothing.
func (m *Metrics) WatchPushBacklog(backlog func() float64) (stop func()) {
	if m == nil {
		return func() {}
	}
	g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "qim_push_backlog",
		Help: "Jobs in the push outbox: stored messages whose push notifications are not all sent or given up (every node of a cluster reports the same shared outbox). NaN when the store could not be read.",
	}, backlog)
	m.reg.MustRegister(g)
	return func() { m.reg.Unregister(g) }
}

// Package metrics counts what a qim server does, for Prometheus, and serves
// the counts and the runtime's profiles over HTTP (Handler). A nil *Metrics
// is valid and records nothing: metrics are off unless the server is started
// with them (qimd serve --metrics).
package metrics

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"

	qimpb "github.com/qim-im/qim/proto"
)

// Metrics holds a server's metrics in a registry of its own. Create it with
// New. Its methods are safe for concurrent use and do nothing on a nil
// *Metrics; those on the path of every message take no lock and allocate
// nothing (their label values are resolved in New).
type Metrics struct {
	// Static after New.
	reg *prometheus.Registry

	connections     prometheus.Gauge
	sessions        prometheus.Gauge
	connects        enumCounters // by qimpb.Code; OK is "ok"
	connectsAborted prometheus.Counter
	retries         prometheus.Counter

	requests  enumCounters // by qimpb.RequestType
	responses enumCounters // by qimpb.Code

	messagesDurable   prometheus.Counter
	messagesEphemeral prometheus.Counter
	messagesOut       prometheus.Counter
	delivery          prometheus.Histogram

	commitSeconds  prometheus.Histogram
	commitMessages prometheus.Histogram
	commitErrors   prometheus.Counter

	drops [numQueues]prometheus.Counter

	push   pushMetrics  // push.go
	events eventMetrics // events.go
	http   httpMetrics  // http.go
}

// Queue names a bounded buffer that drops what does not fit in it.
type Queue int

const (
	// QueueEphemeral is a pusher's buffer of unstored (offline=false)
	// messages for one device: a message that does not fit is lost, as
	// such messages are best-effort.
	QueueEphemeral Queue = iota
	// QueueLive is a pusher's buffer of stored messages routed to one
	// device: a message that does not fit is read back from the store
	// when its turn comes, so nothing is lost but the copy.
	QueueLive
	numQueues
)

var queueNames = [numQueues]string{QueueEphemeral: "ephemeral", QueueLive: "live"}

// latencyBuckets suit durations from 50µs to 5s.
var latencyBuckets = []float64{
	50e-6, 100e-6, 200e-6, 500e-6,
	1e-3, 2e-3, 5e-3, 10e-3, 20e-3, 50e-3, 100e-3, 200e-3, 500e-3,
	1, 2, 5,
}

// New returns metrics registered in a new registry, with the Go runtime's
// and the process's own (go_*, process_*).
func New() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	f := promauto.With(reg)
	m := &Metrics{reg: reg}

	m.connections = f.NewGauge(prometheus.GaugeOpts{
		Name: "qim_connections",
		Help: "Open QUIC connections, authenticated or not.",
	})
	m.sessions = f.NewGauge(prometheus.GaugeOpts{
		Name: "qim_sessions",
		Help: "Authenticated sessions (connections whose CONNECT succeeded).",
	})
	connectNames := make(map[int32]string, len(qimpb.Code_name))
	for v, name := range qimpb.Code_name {
		connectNames[v] = name
	}
	connectNames[int32(qimpb.Code_OK)] = "ok"
	connects := f.NewCounterVec(prometheus.CounterOpts{
		Name: "qim_connects_total",
		Help: `CONNECTs answered, by result: "ok", the code of the refusal, or "aborted" when the connection ended first.`,
	}, []string{"result"})
	m.connects = newEnumCounters(connects, connectNames)
	m.connectsAborted = connects.WithLabelValues("aborted")
	m.retries = f.NewCounter(prometheus.CounterOpts{
		Name: "qim_quic_retries_total",
		Help: "Connection attempts asked to validate their address (QUIC Retry) because of the handshake rate.",
	})

	m.requests = newEnumCounters(f.NewCounterVec(prometheus.CounterOpts{
		Name: "qim_requests_total",
		Help: "Requests read from devices, by type.",
	}, []string{"type"}), qimpb.RequestType_name)
	m.responses = newEnumCounters(f.NewCounterVec(prometheus.CounterOpts{
		Name: "qim_responses_total",
		Help: "Responses to requests, by code (RATE_LIMITED counts requests refused by the rate limit).",
	}, []string{"code"}), qimpb.Code_name)

	messagesIn := f.NewCounterVec(prometheus.CounterOpts{
		Name: "qim_messages_in_total",
		Help: "Messages accepted from senders: durable (queued for the store) or ephemeral (offline=false, routed at once).",
	}, []string{"kind"})
	m.messagesDurable = messagesIn.WithLabelValues("durable")
	m.messagesEphemeral = messagesIn.WithLabelValues("ephemeral")
	m.messagesOut = f.NewCounter(prometheus.CounterOpts{
		Name: "qim_messages_out_total",
		Help: "Messages pushed to devices: push frames handed to a device stream's writer, resends included.",
	})
	m.delivery = f.NewHistogram(prometheus.HistogramOpts{
		Name:    "qim_delivery_latency_seconds",
		Help:    "Time from reading a message off its sender's stream to handing its push frame to a recipient device's stream writer, for messages routed live (not read back from the store).",
		Buckets: latencyBuckets,
	})

	m.commitSeconds = f.NewHistogram(prometheus.HistogramOpts{
		Name:    "qim_store_commit_seconds",
		Help:    "Duration of each store commit (one store.Append of a batch) by the committer.",
		Buckets: latencyBuckets,
	})
	m.commitMessages = f.NewHistogram(prometheus.HistogramOpts{
		Name:    "qim_store_commit_messages",
		Help:    "Messages per store commit.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 11), // 1 to 1024
	})
	m.commitErrors = f.NewCounter(prometheus.CounterOpts{
		Name: "qim_store_commit_errors_total",
		Help: "Store commits that failed (their senders were told STORE_UNAVAILABLE).",
	})

	drops := f.NewCounterVec(prometheus.CounterOpts{
		Name: "qim_queue_drops_total",
		Help: "Messages a bounded buffer did not take: ephemeral (lost) or live (read back from the store later).",
	}, []string{"queue"})
	for q, name := range queueNames {
		m.drops[q] = drops.WithLabelValues(name)
	}
	m.push = newPushMetrics(reg)
	m.events = newEventMetrics(reg)
	m.http = newHTTPMetrics(reg)
	return m
}

// Now returns the current time, to time an operation with, or the zero time
// on a nil *Metrics, so that a server without metrics does not read the
// clock.
func (m *Metrics) Now() time.Time {
	if m == nil {
		return time.Time{}
	}
	return time.Now()
}

// ConnOpened and ConnClosed count the server's QUIC connections.
func (m *Metrics) ConnOpened() {
	if m != nil {
		m.connections.Inc()
	}
}

func (m *Metrics) ConnClosed() {
	if m != nil {
		m.connections.Dec()
	}
}

// SessionOpened counts a CONNECT that succeeded and the session it opened;
// SessionClosed counts the end of that session.
func (m *Metrics) SessionOpened() {
	if m != nil {
		m.connects.inc(int32(qimpb.Code_OK))
		m.sessions.Inc()
	}
}

func (m *Metrics) SessionClosed() {
	if m != nil {
		m.sessions.Dec()
	}
}

// ConnectRefused counts a CONNECT refused with code.
func (m *Metrics) ConnectRefused(code qimpb.Code) {
	if m != nil {
		m.connects.inc(int32(code))
	}
}

// ConnectAborted counts a connection that ended before its CONNECT was
// answered.
func (m *Metrics) ConnectAborted() {
	if m != nil {
		m.connectsAborted.Inc()
	}
}

// Retry counts a connection attempt asked to validate its address.
func (m *Metrics) Retry() {
	if m != nil {
		m.retries.Inc()
	}
}

// Request counts a request read from a device.
func (m *Metrics) Request(t qimpb.RequestType) {
	if m != nil {
		m.requests.inc(int32(t))
	}
}

// Response counts a response to a request.
func (m *Metrics) Response(code qimpb.Code) {
	if m != nil {
		m.responses.inc(int32(code))
	}
}

// MessageIn counts a message accepted from its sender: durable (queued for
// the store) or not.
func (m *Metrics) MessageIn(durable bool) {
	switch {
	case m == nil:
	case durable:
		m.messagesDurable.Inc()
	default:
		m.messagesEphemeral.Inc()
	}
}

// MessageOut counts a message pushed to a device and, unless accepted is
// zero, records its delivery latency: accepted is when the server read it
// from its sender (Now).
func (m *Metrics) MessageOut(accepted time.Time) {
	if m == nil {
		return
	}
	m.messagesOut.Inc()
	if !accepted.IsZero() {
		m.delivery.Observe(time.Since(accepted).Seconds())
	}
}

// StoreCommit records a store commit of n messages that started at start
// (Now) and has just returned err.
func (m *Metrics) StoreCommit(start time.Time, n int, err error) {
	if m == nil {
		return
	}
	m.commitSeconds.Observe(time.Since(start).Seconds())
	m.commitMessages.Observe(float64(n))
	if err != nil {
		m.commitErrors.Inc()
	}
}

// Dropped counts a message that q did not take.
func (m *Metrics) Dropped(q Queue) {
	if m != nil && q >= 0 && q < numQueues {
		m.drops[q].Inc()
	}
}

// enumCounters are the children of a counter vector with one label, one
// for each value of a protobuf enum, resolved once so that counting costs
// no lookup.
type enumCounters struct {
	vec   *prometheus.CounterVec
	known []prometheus.Counter // by enum value; nil where the enum has none
}

func newEnumCounters(vec *prometheus.CounterVec, names map[int32]string) enumCounters {
	n := 0
	for v := range names {
		n = max(n, int(v)+1)
	}
	c := enumCounters{vec: vec, known: make([]prometheus.Counter, n)}
	for v, name := range names {
		if v >= 0 {
			c.known[v] = vec.WithLabelValues(name)
		}
	}
	return c
}

// inc counts one of value v. A value the enum did not have when the server
// was built is counted under its number.
func (c enumCounters) inc(v int32) {
	if v >= 0 && int(v) < len(c.known) && c.known[v] != nil {
		c.known[v].Inc()
		return
	}
	c.vec.WithLabelValues(strconv.Itoa(int(v))).Inc()
}

package metrics

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// httpMetrics are the HTTP API's (package httpapi).
type httpMetrics struct {
	requests *prometheus.CounterVec   // by route and status
	seconds  *prometheus.HistogramVec // by route
}

// newHTTPMetrics registers the HTTP API's metrics with reg.
func newHTTPMetrics(reg prometheus.Registerer) httpMetrics {
	h := httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qim_http_requests_total",
			Help: `HTTP API requests answered, by route (the endpoint's method and pattern, "other" for any other path) and HTTP status.`,
		}, []string{"route", "status"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "qim_http_request_seconds",
			Help:    "Time from an HTTP API request's headers to the end of its answer, by route (a send includes its durable commit; an upload, its body).",
			Buckets: latencyBuckets,
		}, []string{"route"}),
	}
	reg.MustRegister(h.requests, h.seconds)
	return h
}

// HTTPRequest records an HTTP API request of route, answered with status,
// that took d. Routes are the API's fixed patterns, so the label sets are
// bounded.
func (m *Metrics) HTTPRequest(route string, status int, d time.Duration) {
	if m == nil {
		return
	}
	m.http.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	m.http.seconds.WithLabelValues(route).Observe(d.Seconds())
}

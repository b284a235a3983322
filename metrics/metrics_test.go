package metrics_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/qim-im/qim/metrics"
	qimpb "github.com/qim-im/qim/proto"
)

// record calls every instrumentation method once (MessageIn twice).
func record(m *metrics.Metrics) {
	m.ConnOpened()
	m.ConnOpened()
	m.ConnClosed()
	m.SessionOpened()
	m.ConnectRefused(qimpb.Code_UNAUTHENTICATED)
	m.ConnectRefused(qimpb.Code(99)) // a code newer than the server
	m.ConnectAborted()
	m.Retry()
	m.Request(qimpb.RequestType_GROUP)
	m.Response(qimpb.Code_RATE_LIMITED)
	m.MessageIn(true)
	m.MessageIn(false)
	m.MessageOut(m.Now().Add(-time.Millisecond))
	m.MessageOut(time.Time{}) // read back from the store: no latency
	m.StoreCommit(m.Now(), 3, nil)
	m.StoreCommit(m.Now(), 1, errors.New("disk full"))
	m.Dropped(metrics.QueueEphemeral)
	m.Dropped(metrics.QueueLive)
	m.PushSent()
	m.PushFailed()
	m.PushFailed()
	m.PushDropped(metrics.PushRejected)
	m.PushDropped(metrics.PushExpired)
	m.PushDropped(metrics.PushExpired)
	m.WatchPushBacklog(func() float64 { return 5 })
}

func TestNilMetricsRecordNothing(t *testing.T) {
	var m *metrics.Metrics
	record(m) // must not panic
	if !m.Now().IsZero() {
		t.Error("Now on nil Metrics read the clock")
	}
	w := httptest.NewRecorder()
	m.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if w.Code != http.StatusNotFound {
		t.Errorf("nil Handler: %d, want 404", w.Code)
	}
}

func TestHandlerServesMetrics(t *testing.T) {
	m := metrics.New()
	other := metrics.New() // its own registry: New twice must not clash
	record(m)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	otherSrv := httptest.NewServer(other.Handler())
	defer otherSrv.Close()

	got := scrape(t, srv.URL)
	for _, name := range []string{
		"process_cpu_seconds_total", "process_resident_memory_bytes",
		"go_memstats_heap_inuse_bytes", "go_memstats_heap_alloc_bytes", "go_goroutines",
	} {
		if got[name] == nil {
			t.Errorf("%s missing", name)
		}
	}
	for _, tt := range []struct {
		sample
		want float64
	}{
		{sample{"qim_connections", nil}, 1},
		{sample{"qim_sessions", nil}, 1},
		{sample{"qim_connects_total", []string{"result", "ok"}}, 1},
		{sample{"qim_connects_total", []string{"result", "UNAUTHENTICATED"}}, 1},
		{sample{"qim_connects_total", []string{"result", "TOKEN_EXPIRED"}}, 0},
		{sample{"qim_connects_total", []string{"result", "99"}}, 1},
		{sample{"qim_connects_total", []string{"result", "aborted"}}, 1},
		{sample{"qim_quic_retries_total", nil}, 1},
		{sample{"qim_requests_total", []string{"type", "GROUP"}}, 1},
		{sample{"qim_requests_total", []string{"type", "MESSAGE"}}, 0},
		{sample{"qim_responses_total", []string{"code", "RATE_LIMITED"}}, 1},
		{sample{"qim_messages_in_total", []string{"kind", "durable"}}, 1},
		{sample{"qim_messages_in_total", []string{"kind", "ephemeral"}}, 1},
		{sample{"qim_messages_out_total", nil}, 2},
		{sample{"qim_delivery_latency_seconds_count", nil}, 1},
		{sample{"qim_store_commit_seconds_count", nil}, 2},
		{sample{"qim_store_commit_messages_count", nil}, 2},
		{sample{"qim_store_commit_messages_sum", nil}, 4},
		{sample{"qim_store_commit_errors_total", nil}, 1},
		{sample{"qim_queue_drops_total", []string{"queue", "ephemeral"}}, 1},
		{sample{"qim_queue_drops_total", []string{"queue", "live"}}, 1},
		{sample{"qim_push_sent_total", nil}, 1},
		{sample{"qim_push_failures_total", nil}, 2},
		{sample{"qim_push_dropped_total", []string{"reason", "rejected"}}, 1},
		{sample{"qim_push_dropped_total", []string{"reason", "expired"}}, 2},
		{sample{"qim_push_backlog", nil}, 5},
	} {
		if v := got.value(tt.name, tt.labels...); v != tt.want {
			t.Errorf("%v = %v, want %v", tt.sample, v, tt.want)
		}
	}
	if lat := got.value("qim_delivery_latency_seconds_sum"); lat < 0.001 || lat > 1 {
		t.Errorf("delivery latency sum %vs, want about 1ms", lat)
	}
	// A label value is there from the start, at 0, so that rates work
	// from the first scrape.
	if got["qim_responses_total"] == nil || len(got["qim_responses_total"].GetMetric()) < len(qimpb.Code_name) {
		t.Errorf("qim_responses_total does not have a series for every code")
	}
	if v := scrape(t, otherSrv.URL).value("qim_messages_out_total"); v != 0 {
		t.Errorf("a second Metrics counted the first one's messages: %v", v)
	}

	for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap?gc=1", "/debug/pprof/goroutine?debug=1", "/debug/pprof/cmdline", "/debug/pprof/symbol"} {
		resp, body := get(t, srv.URL+path)
		if resp.StatusCode != http.StatusOK || len(body) == 0 {
			t.Errorf("GET %s: %s, %d bytes", path, resp.Status, len(body))
		}
	}
	if resp, _ := get(t, srv.URL+"/"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /: %s, want 404", resp.Status)
	}
}

// TestHotPathsDoNotAllocate checks that what the server records per
// message costs no allocation.
func TestHotPathsDoNotAllocate(t *testing.T) {
	m := metrics.New()
	read := m.Now()
	allocs := testing.AllocsPerRun(1000, func() {
		m.Request(qimpb.RequestType_MESSAGE)
		m.MessageIn(true)
		m.StoreCommit(read, 1, nil)
		m.Response(qimpb.Code_OK)
		m.MessageOut(read)
		m.Dropped(metrics.QueueLive)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per message", allocs)
	}
}

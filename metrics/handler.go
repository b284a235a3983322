package metrics

import (
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler returns the HTTP handler of the metrics endpoint:
//
//	/metrics       the metrics, in the Prometheus text format
//	/debug/pprof/  the runtime's profiles (net/http/pprof); GET
//	               /debug/pprof/heap?gc=1 collects garbage first
//
// Profiles reveal the program's internals and cost CPU while they run:
// serve the handler only where operators, not devices, can reach it. On a
// nil *Metrics, Handler answers every request with 404.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return HandlerFor(m.reg)
}

// HandlerFor is Handler for the metrics gathered by g: the same endpoint
// for a process other than qimd (the bench's baseline server).
func HandlerFor(g prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	// Registered one by one on this mux: importing net/http/pprof also
	// registers them on http.DefaultServeMux, which qim never serves.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

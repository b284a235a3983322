package baseline

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/qim-im/qim/metrics"
)

// MetricsHandler returns a handler that serves, from a registry of its
// own, the Go runtime's and the process's metrics at /metrics, and the
// runtime profiles at /debug/pprof/ — the figures `qim bench` reads from
// qimd, under the same names: process_cpu_seconds_total,
// process_resident_memory_bytes, go_memstats_heap_alloc_bytes. GET
// /debug/pprof/heap?gc=1 runs a garbage collection first.
func MetricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return metrics.HandlerFor(reg)
}

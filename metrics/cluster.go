package metrics

import "github.com/prometheus/client_golang/prometheus"

// ClusterStats are the counters of a node of a cluster: its router's
// (cluster.NATSRouter.Stats) and its device layer's catch-up passes
// (session.Devices.CatchUpPasses).
type ClusterStats struct {
	Published, Received   uint64 // events published to, and received from, NATS
	DroppedOut, DroppedIn uint64 // events (out) or overflows (in) lost by this node
	MissedCalls           uint64 // times the node's listeners were told they missed events
	Reconnects            uint64 // reconnections to NATS
	CatchUpPasses         uint64 // catch-up passes over every session
	Subscriptions         int64  // NATS subscriptions: users with a session on this node
}

// WatchCluster exports stats, read at every scrape, as the qim_cluster_*
// metrics. stats must be safe to call from any goroutine. A nil m does
// nothing.
func (m *Metrics) WatchCluster(stats func() ClusterStats) {
	if m == nil {
		return
	}
	counter := func(name, help string, v func(ClusterStats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(v(stats())) })
	}
	m.reg.MustRegister(
		counter("qim_cluster_events_published_total", "Events this node published to NATS for the other nodes (one per addressed user).",
			func(s ClusterStats) uint64 { return s.Published }),
		counter("qim_cluster_events_received_total", "Events this node received from the other nodes through NATS.",
			func(s ClusterStats) uint64 { return s.Received }),
		counter("qim_cluster_events_dropped_out_total", "Events this node could not hand to NATS (its outgoing queue was full, or NATS refused them); the nodes concerned catch up from the store.",
			func(s ClusterStats) uint64 { return s.DroppedOut }),
		counter("qim_cluster_inbound_overflows_total", "Times events for this node were dropped because its inbound channel was full (slow consumer); its sessions catch up from the store.",
			func(s ClusterStats) uint64 { return s.DroppedIn }),
		counter("qim_cluster_missed_total", "Times this node was told it may have missed events (reconnection, overflow, another node's report).",
			func(s ClusterStats) uint64 { return s.MissedCalls }),
		counter("qim_cluster_reconnects_total", "Reconnections of this node to NATS.",
			func(s ClusterStats) uint64 { return s.Reconnects }),
		counter("qim_cluster_catchup_passes_total", "Catch-up passes in which every session on this node re-read its inbox.",
			func(s ClusterStats) uint64 { return s.CatchUpPasses }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "qim_cluster_subscriptions", Help: "NATS subscriptions of this node: users with a session on it."},
			func() float64 { return float64(stats().Subscriptions) }),
	)
}

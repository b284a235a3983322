package metrics

import "github.com/prometheus/client_golang/prometheus"

// EventKind is a kind of soft event (docs/PROTOCOL.md section 11).
type EventKind int

const (
	EventReceipt EventKind = iota
	EventTyping
	EventPresence
	EventReceiptCount
	numEventKinds
)

var eventKindNames = [numEventKinds]string{
	EventReceipt: "receipt", EventTyping: "typing", EventPresence: "presence", EventReceiptCount: "receipt_count",
}

// EventDrop says why an event was not sent (Metrics.EventDropped).
type EventDrop int

const (
	// EventQueueFull: the device's event queue was at its budget.
	EventQueueFull EventDrop = iota
	// EventExpired: a typing event outlived its ttl before its turn.
	EventExpired
	// EventWriteFailed: the control stream or the datagram could not be
	// written (the device does not read, or the connection ends).
	EventWriteFailed
	numEventDrops
)

var eventDropNames = [numEventDrops]string{EventQueueFull: "queue_full", EventExpired: "expired", EventWriteFailed: "write_failed"}

// eventMetrics are the counters of soft events.
type eventMetrics struct {
	stream   [numEventKinds]prometheus.Counter
	datagram [numEventKinds]prometheus.Counter
	dropped  [numEventKinds][numEventDrops]prometheus.Counter
}

func newEventMetrics(reg prometheus.Registerer) eventMetrics {
	var e eventMetrics
	sent := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "qim_events_sent_total",
		Help: `Soft events (receipts, typing, presence) written to devices, by kind and by "via": "stream" (the control stream) or "datagram".`,
	}, []string{"kind", "via"})
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "qim_events_dropped_total",
		Help: `Soft events not sent, by kind and reason: "queue_full" (the device's event budget), "expired" (typing older than its ttl), "write_failed".`,
	}, []string{"kind", "reason"})
	reg.MustRegister(sent, dropped)
	for k, kn := range eventKindNames {
		e.stream[k] = sent.WithLabelValues(kn, "stream")
		e.datagram[k] = sent.WithLabelValues(kn, "datagram")
		for d, dn := range eventDropNames {
			e.dropped[k][d] = dropped.WithLabelValues(kn, dn)
		}
	}
	return e
}

// EventSent counts an event written to a device.
func (m *Metrics) EventSent(k EventKind, datagram bool) {
	if m == nil || k < 0 || k >= numEventKinds {
		return
	}
	if datagram {
		m.events.datagram[k].Inc()
	} else {
		m.events.stream[k].Inc()
	}
}

// EventDropped counts an event that was not sent.
func (m *Metrics) EventDropped(k EventKind, why EventDrop) {
	if m != nil && k >= 0 && k < numEventKinds && why >= 0 && why < numEventDrops {
		m.events.dropped[k][why].Inc()
	}
}

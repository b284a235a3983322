package bench

import (
	"slices"
	"sync"
	"time"
)

// latencies collects durations from many goroutines. It keeps every sample:
// a run records at most a few million, and exact percentiles are worth the
// memory here.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d []time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d...)
	l.mu.Unlock()
}

// Percentiles are latency figures of a run.
type Percentiles struct {
	N                   int
	P50, P99, P999, Max time.Duration
}

func (l *latencies) percentiles() Percentiles {
	l.mu.Lock()
	defer l.mu.Unlock()
	return percentilesOf(l.d)
}

// percentilesOf sorts d and reads its percentiles.
func percentilesOf(d []time.Duration) Percentiles {
	if len(d) == 0 {
		return Percentiles{}
	}
	slices.Sort(d)
	at := func(q float64) time.Duration { return d[min(len(d)-1, int(q*float64(len(d))))] }
	return Percentiles{N: len(d), P50: at(0.50), P99: at(0.99), P999: at(0.999), Max: d[len(d)-1]}
}

// ms is d in milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

package reliability_test

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// heapSampler records the peak of runtime.MemStats.HeapInuse, sampled
// every interval in its own goroutine until Stop.
type heapSampler struct {
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
	peak     atomic.Uint64
	samples  atomic.Int64
}

// startHeapSampler starts sampling; it stops at the latest when the test
// ends.
func startHeapSampler(t testing.TB, interval time.Duration) *heapSampler {
	h := &heapSampler{stop: make(chan struct{}), done: make(chan struct{})}
	t.Cleanup(func() { h.Stop() })
	go func() {
		defer close(h.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			h.sample()
			select {
			case <-tick.C:
			case <-h.stop:
				h.sample()
				return
			}
		}
	}()
	return h
}

func (h *heapSampler) sample() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	h.samples.Add(1)
	for {
		p := h.peak.Load()
		if ms.HeapInuse <= p || h.peak.CompareAndSwap(p, ms.HeapInuse) {
			return
		}
	}
}

// Stop stops sampling and returns the peak.
func (h *heapSampler) Stop() uint64 {
	h.stopOnce.Do(func() { close(h.stop) })
	<-h.done
	return h.peak.Load()
}

// heapAfterGC returns HeapInuse after a garbage collection.
func heapAfterGC() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

package bench

import (
	"cmp"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qim-im/qim/client"
)

// ConnectOptions shapes the connect scenario.
type ConnectOptions struct {
	Concurrency int           // devices connecting at once; 0 means 32
	Duration    time.Duration // 0 means 5s
}

// ConnectResult is what a connect run measured.
type ConnectResult struct {
	Connects int64 // completed: handshake, CONNECT and the server's answer
	Errors   int64
	FirstErr error
	Elapsed  time.Duration
	Latency  Percentiles // of one connect
}

// Rate is connects per second.
func (r ConnectResult) Rate() float64 { return perSecond(r.Connects, r.Elapsed) }

// Connect measures connects per second: each a full QUIC handshake (no
// session resumption: every client starts with an empty ticket cache), then
// CONNECT with a token and the server's answer. Each connection is closed
// (DISCONNECT) in the background, outside the measured path.
func Connect(ctx context.Context, e *Env, o ConnectOptions) (ConnectResult, error) {
	o.Concurrency = cmp.Or(o.Concurrency, 32)
	o.Duration = cmp.Or(o.Duration, 5*time.Second)
	e.progressf("connect: %d at a time for %v", o.Concurrency, o.Duration)
	var (
		connects, errs atomic.Int64
		firstErr       atomic.Pointer[error]
		lat            latencies
		wg, closing    sync.WaitGroup
	)
	closeSem := make(chan struct{}, 4*o.Concurrency)
	runCtx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()
	start := time.Now()
	stopProgress := e.every(time.Second, func() {
		e.progressf("  %.0f connects/s", perSecond(connects.Load(), time.Since(start)))
	})
	for w := range o.Concurrency {
		cfg := e.ClientConfig(e.User("connect", w))
		wg.Go(func() {
			var local []time.Duration
			defer func() { lat.add(local) }()
			for runCtx.Err() == nil {
				t0 := time.Now()
				c, err := client.Dial(runCtx, cfg)
				if err != nil {
					if runCtx.Err() == nil {
						errs.Add(1)
						firstErr.CompareAndSwap(nil, &err)
					}
					continue
				}
				local = append(local, time.Since(t0))
				connects.Add(1)
				closeSem <- struct{}{}
				closing.Go(func() {
					c.Close()
					<-closeSem
				})
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopProgress()
	closing.Wait()
	res := ConnectResult{Connects: connects.Load(), Errors: errs.Load(), Elapsed: elapsed, Latency: lat.percentiles()}
	if p := firstErr.Load(); p != nil {
		res.FirstErr = *p
	}
	if res.Connects == 0 {
		return res, fmt.Errorf("bench: no connect succeeded (errors: %d, first: %v)", res.Errors, res.FirstErr)
	}
	return res, ctx.Err()
}

package bench

import (
	"cmp"
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/qim-im/qim/client"
	qimpb "github.com/qim-im/qim/proto"
)

// PairOptions shapes the pair scenario: Pairs senders, each sending to its
// own receiver, each keeping Window sends in flight.
type PairOptions struct {
	Pairs  int // 0 means 50
	Window int // sends in flight per sender; 0 means 32
	// Offline stores every message (synced) before the sender's
	// acknowledgement; false sends them to online devices only.
	Offline bool
	// Rate is the total send rate in messages per second, spread evenly
	// over the senders; 0 means closed loop: as fast as acknowledgements
	// come back. With a rate, Window still bounds the sends in flight.
	Rate     float64
	Size     int           // text bytes per message; 0 means 100
	Warmup   time.Duration // 0 means 1s; not measured
	Duration time.Duration // measured; 0 means 5s
}

func (o *PairOptions) defaults() {
	o.Pairs = cmp.Or(o.Pairs, 50)
	o.Window = cmp.Or(o.Window, 32)
	o.Size = max(cmp.Or(o.Size, 100), stampLen)
	o.Warmup = cmp.Or(o.Warmup, time.Second)
	o.Duration = cmp.Or(o.Duration, 5*time.Second)
}

// PairResult is what a pair run measured, over its measured period only.
type PairResult struct {
	Sent      int64 // acknowledged sends
	Delivered int64 // messages received by the receivers
	Errors    int64 // failed sends
	FirstErr  error
	Elapsed   time.Duration
	Latency   Percentiles // send to receive, of the messages delivered
	ServerCPU float64     // server CPU seconds; 0 without Env.Metrics
}

// Rate is delivered messages per second.
func (r PairResult) Rate() float64 { return perSecond(r.Delivered, r.Elapsed) }

// CPUPerMsg is server CPU microseconds per delivered message, or 0.
func (r PairResult) CPUPerMsg() float64 {
	if r.Delivered == 0 {
		return 0
	}
	return r.ServerCPU * 1e6 / float64(r.Delivered)
}

// Pair runs the pair scenario.
func Pair(ctx context.Context, e *Env, o PairOptions) (PairResult, error) {
	return PairAcross(ctx, []*Env{e}, o)
}

// PairAcross runs the pair scenario over the nodes of a cluster: pair i's
// sender is on nodes[i%len(nodes)] and its receiver on the next node,
// nodes[(i+1)%len(nodes)], so that with two nodes or more every message
// crosses from one node to another. ServerCPU is the sum over the nodes.
// The users are named after nodes[0], which gets the progress lines.
func PairAcross(ctx context.Context, nodes []*Env, o PairOptions) (PairResult, error) {
	if len(nodes) == 0 {
		return PairResult{}, fmt.Errorf("bench: pair: no node")
	}
	e := nodes[0]
	o.defaults()
	kind := "ephemeral"
	if o.Offline {
		kind = "durable"
	}
	e.progressf("pair-%s: connecting %d pairs", kind, o.Pairs)
	senders, receivers := make([]string, o.Pairs), make([]string, o.Pairs)
	for i := range o.Pairs {
		senders[i], receivers[i] = e.User("pair-s", i), e.User("pair-r", i)
	}
	rx, err := dialAll(ctx, rotate(nodes, 1), receivers, 32, nil)
	if err != nil {
		return PairResult{}, err
	}
	defer closeAll(rx)
	tx, err := dialAll(ctx, nodes, senders, 32, func(c *client.Config) { c.SendOnly = true })
	if err != nil {
		return PairResult{}, err
	}
	defer closeAll(tx)

	var (
		measuring atomic.Bool
		delivered atomic.Int64
		sent      atomic.Int64
		errs      atomic.Int64
		firstErr  atomic.Pointer[error]
		lat       latencies
		wg        sync.WaitGroup
	)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	for _, r := range rx {
		wg.Go(func() {
			var local []time.Duration
			defer func() { lat.add(local) }()
			for {
				select {
				case <-runCtx.Done():
					return
				case m, ok := <-r.Messages():
					if !ok {
						return
					}
					if !measuring.Load() {
						continue
					}
					delivered.Add(1)
					if at, ok := stampOf(m); ok {
						local = append(local, time.Since(at))
					}
				}
			}
		})
	}
	pad := fmt.Sprintf("%0*d", o.Size-stampLen, 0)
	for i, s := range tx {
		var lim *rate.Limiter
		if o.Rate > 0 {
			lim = rate.NewLimiter(rate.Limit(o.Rate/float64(o.Pairs)), 1)
		}
		to := client.ToUser(receivers[i])
		for range o.Window {
			wg.Go(func() {
				for runCtx.Err() == nil {
					if lim != nil && lim.Wait(runCtx) != nil {
						return
					}
					_, err := s.Send(runCtx, to, client.Outgoing{Text: stamp(time.Now()) + pad, NoOffline: !o.Offline})
					switch {
					case runCtx.Err() != nil:
						return
					case err != nil:
						errs.Add(1)
						firstErr.CompareAndSwap(nil, &err)
						time.Sleep(10 * time.Millisecond) // do not spin on a refusing server
					case measuring.Load():
						sent.Add(1)
					}
				}
			})
		}
	}

	e.progressf("pair-%s: warming up %v", kind, o.Warmup)
	sleepCtx(ctx, o.Warmup)
	before := scrapeAll(ctx, nodes)
	e.progressf("pair-%s: measuring %v", kind, o.Duration)
	start := time.Now()
	measuring.Store(true)
	stopProgress := e.every(time.Second, func() {
		e.progressf("  %.0f msgs/s delivered", perSecond(delivered.Load(), time.Since(start)))
	})
	sleepCtx(ctx, o.Duration)
	measuring.Store(false)
	elapsed := time.Since(start)
	stopProgress()
	after := scrapeAll(ctx, nodes)
	stop()
	wg.Wait()
	res := PairResult{
		Sent:      sent.Load(),
		Delivered: delivered.Load(),
		Errors:    errs.Load(),
		Elapsed:   elapsed,
		Latency:   lat.percentiles(),
		ServerCPU: after.CPU() - before.CPU(),
	}
	if p := firstErr.Load(); p != nil {
		res.FirstErr = *p
	}
	if res.Delivered == 0 {
		return res, fmt.Errorf("bench: pair-%s delivered nothing in %v (acknowledged sends: %d, send errors: %d, first: %v)", kind, elapsed.Round(time.Millisecond), res.Sent, res.Errors, res.FirstErr)
	}
	return res, ctx.Err()
}

// stampLen is the length of the send time a bench message's text starts
// with: Unix nanoseconds, zero-padded.
const stampLen = 19

func stamp(t time.Time) string { return fmt.Sprintf("%0*d", stampLen, t.UnixNano()) }

// stampOf reads the send time from a bench message.
func stampOf(m *qimpb.Message) (time.Time, bool) {
	text := client.Text(m)
	if len(text) < stampLen {
		return time.Time{}, false
	}
	ns, err := strconv.ParseInt(text[:stampLen], 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}

// scrape reads the server's metrics, or returns a zero Sample without
// Env.Metrics.
func (e *Env) scrape(ctx context.Context, gc bool) (Sample, error) {
	if e.Metrics == "" {
		return Sample{}, nil
	}
	s, err := Scrape(ctx, e.Metrics, gc)
	if err != nil {
		e.progressf("  metrics: %v", err)
	}
	return s, err
}

// scrapeAll reads every node's metrics, as Env.scrape does, and returns
// their sum: the cluster's CPU seconds, commits, and so on.
func scrapeAll(ctx context.Context, nodes []*Env) Sample {
	sum := Sample{At: time.Now(), Values: make(map[string]float64)}
	for _, e := range nodes {
		s, _ := e.scrape(ctx, false)
		for k, v := range s.Values {
			sum.Values[k] += v
		}
	}
	return sum
}

func perSecond(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

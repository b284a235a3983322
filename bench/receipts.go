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

// ReceiptsOptions shapes the receipts scenario: Pairs sender/reader pairs;
// in each, the sender first sends Messages messages to the reader (not
// measured), then the reader reads them one by one, Window READs in
// flight, and the sender's device gets a read receipt for each.
type ReceiptsOptions struct {
	Pairs    int // 0 means 50
	Window   int // READs in flight per reader; 0 means 4
	Messages int // per pair; 0 means 500
}

func (o *ReceiptsOptions) defaults() {
	o.Pairs = cmp.Or(o.Pairs, 50)
	o.Window = cmp.Or(o.Window, 4)
	o.Messages = cmp.Or(o.Messages, 500)
}

// ReceiptsResult is what a receipts run measured, from the first READ to
// the last receipt.
type ReceiptsResult struct {
	Pairs, Messages int
	// Receipts counts the READs whose receipt reached the sender's device:
	// the seqs that a Receipt event's read covered. The server coalesces a
	// receipt that has not been sent yet with the next one of the same
	// conversation (PROTOCOL.md 11.1), so one event may cover several.
	Receipts int64
	Events   int64 // Receipt events with a new read that the senders' devices got
	Dropped  uint64
	Elapsed  time.Duration
	// Latency is, per READ, the time from its request to the first Receipt
	// event at the sender's device that covers its seq.
	Latency   Percentiles
	ServerCPU float64 // server CPU seconds over the READs; 0 without Env.Metrics
}

// Rate is receipts per second: READs whose receipt reached the sender.
func (r ReceiptsResult) Rate() float64 { return perSecond(r.Receipts, r.Elapsed) }

// receiptPair is one sender and its reader. Each pair has one goroutine
// reading the sender's events (watch), Window goroutines reading with the
// reader's device, and one draining the reader's messages.
type receiptPair struct {
	sender, reader *client.Client

	// The seqs of the sender's messages, stored before the first READ (and
	// read by watch, which runs from before).
	lo, hi atomic.Uint64

	next   atomic.Int64   // index (seq - lo) of the next READ
	readAt []atomic.Int64 // when the READ of seq lo+i was sent, Unix ns; 0 before
	got    atomic.Int64   // messages the reader's device received

	// Owned by watch, read by the coordinator once watch has returned or
	// through atomics.
	delivered atomic.Uint64 // the reader's delivered cursor as the sender saw it
	read      atomic.Uint64 // the reader's read cursor as the sender saw it
	events    atomic.Int64
	lat       []time.Duration
}

// CPUPerReceipt is server CPU microseconds per receipt, or 0.
func (r ReceiptsResult) CPUPerReceipt() float64 {
	if r.Receipts == 0 {
		return 0
	}
	return r.ServerCPU * 1e6 / float64(r.Receipts)
}

// Receipts runs the receipts scenario: read receipts per second end to
// end, each READ a durable write of the reader's cursor plus a push to the
// sender's device.
func Receipts(ctx context.Context, e *Env, o ReceiptsOptions) (ReceiptsResult, error) {
	o.defaults()
	res := ReceiptsResult{Pairs: o.Pairs, Messages: o.Messages}
	e.progressf("receipts: connecting %d pairs", o.Pairs)
	senders, readers := make([]string, o.Pairs), make([]string, o.Pairs)
	for i := range o.Pairs {
		senders[i], readers[i] = e.User("rcpt-s", i), e.User("rcpt-r", i)
	}
	// The senders' Events channels hold every receipt of a run: none is
	// dropped however late their goroutines run.
	tx, err := dialAll(ctx, []*Env{e}, senders, 32, func(c *client.Config) { c.EventQueue = 4096 })
	if err != nil {
		return res, err
	}
	defer closeAll(tx)
	rx, err := dialAll(ctx, []*Env{e}, readers, 32, nil)
	if err != nil {
		return res, err
	}
	defer closeAll(rx)

	pairs := make([]*receiptPair, o.Pairs)
	for i := range pairs {
		pairs[i] = &receiptPair{sender: tx[i], reader: rx[i], readAt: make([]atomic.Int64, o.Messages)}
	}
	var (
		covered atomic.Int64 // over all pairs, from the first READ on
		last    atomic.Int64 // the latest covering event, Unix ns
		wg      sync.WaitGroup
	)
	want := int64(o.Pairs) * int64(o.Messages)
	all := make(chan struct{})
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	for _, p := range pairs {
		wg.Go(func() { p.drain(runCtx) })
		wg.Go(func() {
			p.watch(runCtx, func(n int64, at int64) {
				for {
					old := last.Load()
					if old >= at || last.CompareAndSwap(old, at) {
						break
					}
				}
				if covered.Add(n) == want {
					close(all)
				}
			})
		})
	}
	defer func() {
		stop()
		wg.Wait()
	}()

	setupCtx, cancelSetup := context.WithTimeout(runCtx, 60*time.Second+time.Duration(want)*time.Millisecond)
	err = sendReceiptsSetup(setupCtx, e, pairs, o)
	cancelSetup()
	if err != nil {
		return res, err
	}

	e.progressf("receipts: %d readers read %d messages each, %d READs in flight", o.Pairs, o.Messages, o.Window)
	var (
		readErr atomic.Pointer[error]
		reading sync.WaitGroup
	)
	// The READs and their receipts get timeout, READs blocked on a stuck
	// server included.
	timeout := 30*time.Second + time.Duration(want)*time.Millisecond
	readCtx, cancelRead := context.WithTimeout(runCtx, timeout)
	defer cancelRead()
	before, _ := e.scrape(ctx, false)
	start := time.Now()
	for _, p := range pairs {
		to := client.ToUser(p.sender.User())
		for range o.Window {
			reading.Go(func() {
				for readCtx.Err() == nil {
					i := p.next.Add(1) - 1
					if i >= int64(o.Messages) {
						return
					}
					p.readAt[i].Store(time.Now().UnixNano())
					seq := p.lo.Load() + uint64(i)
					if _, err := p.reader.Read(readCtx, to, seq); err != nil {
						if readCtx.Err() == nil {
							err = fmt.Errorf("bench: receipts: %s reads %d: %w", p.reader.User(), seq, err)
							readErr.CompareAndSwap(nil, &err)
							stop()
						}
						return
					}
				}
			})
		}
	}
	stopProgress := e.every(time.Second, func() {
		e.progressf("  %d/%d receipts", covered.Load(), want)
	})
	reading.Wait()
	select {
	case <-all:
	case <-readCtx.Done():
	}
	stopProgress()
	after, _ := e.scrape(ctx, false)
	stop()
	wg.Wait()

	res.ServerCPU = after.CPU() - before.CPU()
	res.Receipts = covered.Load()
	res.Elapsed = time.Duration(last.Load() - start.UnixNano())
	var lat []time.Duration
	for _, p := range pairs {
		res.Events += p.events.Load()
		res.Dropped += p.sender.EventsDropped()
		lat = append(lat, p.lat...)
	}
	res.Latency = percentilesOf(lat)
	if p := readErr.Load(); p != nil {
		return res, *p
	}
	if res.Receipts < want {
		return res, fmt.Errorf("bench: receipts: %d of %d read receipts arrived within %v (%d events dropped)", res.Receipts, want, timeout, res.Dropped)
	}
	return res, ctx.Err()
}

// sendReceiptsSetup has each pair's sender send o.Messages durable
// messages to its reader, 32 in flight, records their seqs, and waits
// until the readers' devices received them all and the senders saw them
// delivered, so that none of that traffic overlaps the READs.
func sendReceiptsSetup(ctx context.Context, e *Env, pairs []*receiptPair, o ReceiptsOptions) error {
	e.progressf("receipts: %d senders send %d messages each (not measured)", len(pairs), o.Messages)
	var (
		wg    sync.WaitGroup
		first atomic.Pointer[error]
	)
	for _, p := range pairs {
		var (
			next atomic.Int64
			mu   sync.Mutex
			seqs []uint64
		)
		to := client.ToUser(p.reader.User())
		var sends sync.WaitGroup
		for range 32 {
			sends.Go(func() {
				for first.Load() == nil && next.Add(1) <= int64(o.Messages) {
					ack, err := p.sender.Send(ctx, to, client.Outgoing{Text: "receipts bench"})
					if err != nil {
						err = fmt.Errorf("bench: receipts: %s sends: %w", p.sender.User(), err)
						first.CompareAndSwap(nil, &err)
						return
					}
					mu.Lock()
					seqs = append(seqs, ack.GetSeq())
					mu.Unlock()
				}
			})
		}
		wg.Go(func() {
			sends.Wait()
			if first.Load() != nil {
				return
			}
			lo, hi := seqs[0], seqs[0]
			for _, s := range seqs {
				lo, hi = min(lo, s), max(hi, s)
			}
			if hi-lo+1 != uint64(o.Messages) {
				err := fmt.Errorf("bench: receipts: %s's %d messages have seqs %d to %d", p.sender.User(), o.Messages, lo, hi)
				first.CompareAndSwap(nil, &err)
			}
			p.lo.Store(lo)
			p.hi.Store(hi)
		})
	}
	wg.Wait()
	if p := first.Load(); p != nil {
		return *p
	}
	// Every reader's device has every message, and every sender has seen
	// it delivered: a bounded wait.
	deadline := time.Now().Add(30*time.Second + time.Duration(len(pairs)*o.Messages)*time.Millisecond)
	for {
		done := true
		for _, p := range pairs {
			if p.got.Load() < int64(o.Messages) || p.delivered.Load() < p.hi.Load() {
				done = false
				break
			}
		}
		if done {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			var got, delivered int64
			for _, p := range pairs {
				got += p.got.Load()
				if p.delivered.Load() >= p.hi.Load() {
					delivered++
				}
			}
			return fmt.Errorf("bench: receipts: after sending, the readers' devices have %d of %d messages and %d of %d senders saw them all delivered",
				got, len(pairs)*o.Messages, delivered, len(pairs))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// drain receives the reader's messages, counting them, until ctx ends or
// the session does.
func (p *receiptPair) drain(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-p.reader.Messages():
			if !ok {
				return
			}
			p.got.Add(1)
		}
	}
}

// watch follows the sender's events until ctx ends or the session does,
// recording the reader's delivered and read cursors. For each event that
// moves the read cursor within [lo, hi], it records the latency of each
// READ it covers and calls covered with their number and the time.
func (p *receiptPair) watch(ctx context.Context, covered func(n int64, at int64)) {
	reader := p.reader.User()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-p.sender.Events():
			if !ok {
				return
			}
			r := e.GetReceipt()
			if r == nil || r.GetUser() != reader {
				continue
			}
			now := time.Now()
			if r.GetDelivered() > p.delivered.Load() {
				p.delivered.Store(r.GetDelivered())
			}
			prev := p.read.Load()
			if r.GetRead() <= prev {
				continue
			}
			p.read.Store(r.GetRead())
			p.events.Add(1)
			// lo and hi are set before the first READ, whose receipt
			// is the first that moves read.
			lo, hi := p.lo.Load(), p.hi.Load()
			from, to := max(prev+1, lo), min(r.GetRead(), hi)
			if lo == 0 || from > to {
				continue
			}
			for s := from; s <= to; s++ {
				if at := p.readAt[s-lo].Load(); at != 0 {
					p.lat = append(p.lat, now.Sub(time.Unix(0, at)))
				}
			}
			covered(int64(to-from+1), now.UnixNano())
		}
	}
}

package bench

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qim-im/qim/client"
	qimpb "github.com/qim-im/qim/proto"
)

// FanoutOptions shapes the fanout scenario: one sender, groups of each size
// in Members (the sender counts as a member), every member online.
type FanoutOptions struct {
	Members []int // 0 means 100, 1,000 and 10,000
	// Messages sent to each group; 0 means enough for about 200,000
	// deliveries, at least 20.
	Messages  int
	Window    int  // sends in flight; 0 means 16
	Ephemeral bool // send with offline=false; the default stores every message
	Size      int  // text bytes; 0 means 100
}

// FanoutResult is what one group size measured.
type FanoutResult struct {
	Members    int
	Messages   int
	Deliveries int64         // messages received, over all members
	Elapsed    time.Duration // first send to last receipt
	// LastRecipient is, per message, the time from its send to its receipt
	// by the last member to get it.
	LastRecipient Percentiles
	ServerCPU     float64 // server CPU seconds; 0 without Env.Metrics
}

// Rate is deliveries per second.
func (r FanoutResult) Rate() float64 { return perSecond(r.Deliveries, r.Elapsed) }

// Fanout runs the fanout scenario, one group size after the other, from the
// smallest; the devices of a group stay connected for the next, larger one.
func Fanout(ctx context.Context, e *Env, o FanoutOptions) ([]FanoutResult, error) {
	return FanoutAcross(ctx, []*Env{e}, o)
}

// FanoutAcross runs the fanout scenario over the nodes of a cluster: member
// k of a group is on nodes[k%len(nodes)], the sender (member 0) on
// nodes[0], so that the members are spread evenly over the nodes and most
// deliveries cross from the sender's node to another. ServerCPU is the sum
// over the nodes. The users are named after nodes[0], which gets the
// progress lines.
func FanoutAcross(ctx context.Context, nodes []*Env, o FanoutOptions) ([]FanoutResult, error) {
	if len(nodes) == 0 {
		return nil, fmt.Errorf("bench: fanout: no node")
	}
	e := nodes[0]
	if len(o.Members) == 0 {
		o.Members = []int{100, 1000, 10000}
	}
	o.Window = cmp.Or(o.Window, 16)
	o.Size = max(cmp.Or(o.Size, 100), stampLen+8)
	if slices.Min(o.Members) < 2 {
		return nil, fmt.Errorf("bench: a fanout group needs at least 2 members")
	}
	sender, err := dialAll(ctx, nodes[:1], []string{e.User("fan-s", 0)}, 1, nil)
	if err != nil {
		return nil, err
	}
	defer closeAll(sender)
	s := sender[0]

	// Each group size runs with just its members connected, as the bare
	// fan-out does: devices are added as the groups grow.
	var rx []*client.Client
	defer func() { closeAll(rx) }()
	var out []FanoutResult
	for _, n := range slices.Sorted(slices.Values(o.Members)) {
		if more := n - 1 - len(rx); more > 0 {
			e.progressf("fanout-%d: connecting %d more devices", n, more)
			users := make([]string, more)
			for i := range users {
				users[i] = e.User("fan-r", len(rx)+i)
			}
			// Receiver r is member r+1.
			cs, err := dialAll(ctx, rotate(nodes, len(rx)+1), users, 64, nil)
			if err != nil {
				return out, err
			}
			rx = append(rx, cs...)
		}
		r, err := fanoutOne(ctx, nodes, o, s, rx[:n-1])
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

func fanoutOne(ctx context.Context, nodes []*Env, o FanoutOptions, s *client.Client, rx []*client.Client) (FanoutResult, error) {
	e := nodes[0]
	n := len(rx) + 1
	msgs := o.Messages
	if msgs == 0 {
		msgs = max(20, 200000/len(rx))
	}
	g, err := s.CreateGroup(ctx, fmt.Sprintf("bench fanout %d", n))
	if err != nil {
		return FanoutResult{}, fmt.Errorf("bench: create group: %w", err)
	}
	e.progressf("fanout-%d: %d members join %s", n, len(rx), g.GetId())
	if err := joinAll(ctx, e, rx, g.GetId()); err != nil {
		return FanoutResult{}, err
	}

	// last[i] is the latest receipt of message i, in Unix nanoseconds.
	last := make([]atomic.Int64, msgs)
	sentAt := make([]int64, msgs)
	var delivered atomic.Int64
	want := int64(msgs) * int64(len(rx))
	all := make(chan struct{})
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	for _, r := range rx {
		wg.Go(func() {
			for {
				select {
				case <-runCtx.Done():
					return
				case m, ok := <-r.Messages():
					if !ok {
						return
					}
					i, ok := fanoutIndex(m, g.GetId(), msgs)
					if !ok {
						continue
					}
					now := time.Now().UnixNano()
					for {
						old := last[i].Load()
						if old >= now || last[i].CompareAndSwap(old, now) {
							break
						}
					}
					if delivered.Add(1) == want {
						close(all)
					}
				}
			}
		})
	}

	before := scrapeAll(ctx, nodes)
	e.progressf("fanout-%d: sending %d messages", n, msgs)
	pad := fmt.Sprintf("%0*d", o.Size-stampLen-8, 0)
	var (
		next    atomic.Int64
		sendErr atomic.Pointer[error]
		senders sync.WaitGroup
	)
	start := time.Now()
	for range o.Window {
		senders.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= msgs || runCtx.Err() != nil {
					return
				}
				now := time.Now()
				sentAt[i] = now.UnixNano()
				text := stamp(now) + fmt.Sprintf("%08d", i) + pad
				if _, err := s.Send(runCtx, client.ToGroup(g.GetId()), client.Outgoing{Text: text, NoOffline: o.Ephemeral}); err != nil {
					sendErr.CompareAndSwap(nil, &err)
					stop()
					return
				}
			}
		})
	}
	stopProgress := e.every(time.Second, func() {
		e.progressf("  %d/%d delivered", delivered.Load(), want)
	})
	senders.Wait()
	timeout := time.Duration(max(30, want/5000)) * time.Second
	select {
	case <-all:
	case <-runCtx.Done():
	case <-time.After(timeout):
	}
	stopProgress()
	after := scrapeAll(ctx, nodes)
	stop()
	wg.Wait()

	res := FanoutResult{Members: n, Messages: msgs, Deliveries: delivered.Load(), ServerCPU: after.CPU() - before.CPU()}
	var end int64
	d := make([]time.Duration, 0, msgs)
	for i := range last {
		if l := last[i].Load(); l != 0 {
			end = max(end, l)
			d = append(d, time.Duration(l-sentAt[i]))
		}
	}
	res.Elapsed = time.Duration(end - start.UnixNano())
	res.LastRecipient = percentilesOf(d)
	if p := sendErr.Load(); p != nil {
		return res, fmt.Errorf("bench: fanout-%d send: %w", n, *p)
	}
	if res.Deliveries < want {
		return res, fmt.Errorf("bench: fanout-%d: %d of %d deliveries arrived within %v", n, res.Deliveries, want, timeout)
	}
	return res, ctx.Err()
}

// fanoutIndex reads the message index of a fanout message to group.
func fanoutIndex(m *qimpb.Message, group string, msgs int) (int, bool) {
	if m.GetToGroup() != group {
		return 0, false
	}
	text := client.Text(m)
	if len(text) < stampLen+8 {
		return 0, false
	}
	i, err := strconv.Atoi(text[stampLen : stampLen+8])
	if err != nil || i < 0 || i >= msgs {
		return 0, false
	}
	return i, true
}

// joinAll has every client join group id, 64 at a time.
func joinAll(ctx context.Context, e *Env, cs []*client.Client, id string) error {
	var (
		wg    sync.WaitGroup
		next  atomic.Int64
		first atomic.Pointer[error]
	)
	for range min(64, len(cs)) {
		wg.Go(func() {
			for first.Load() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(cs) {
					return
				}
				if _, err := cs[i].JoinGroup(ctx, id); err != nil {
					err = fmt.Errorf("bench: %s joins %s: %w", cs[i].User(), id, err)
					first.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	wg.Wait()
	if p := first.Load(); p != nil {
		return *p
	}
	return nil
}

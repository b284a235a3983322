package bench

import (
	"cmp"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qim-im/qim/client"
	qimpb "github.com/qim-im/qim/proto"
)

// PresenceOptions shapes the presence-fanout scenario: one user with
// Watchers mutual contacts, each with one device connected and presence
// events on, changes its presence Changes times; between two changes it
// sends an unstored message to a group of the same devices, the baseline.
type PresenceOptions struct {
	Watchers int // 0 means 1,000
	Changes  int // measured changes, and as many messages; 0 means 10
	// Gap is the least time between two presence changes: at least the
	// server's coalescing window (qimd serve --presence-coalesce), within
	// which a change and its undoing would not be sent at all. 0 means 1s,
	// qimd's default window.
	Gap time.Duration
}

func (o *PresenceOptions) defaults() {
	o.Watchers = cmp.Or(o.Watchers, 1000)
	o.Changes = cmp.Or(o.Changes, 10)
	o.Gap = cmp.Or(o.Gap, time.Second)
}

// PresenceResult is what a presence-fanout run measured: the presence
// changes and, in the same run, the unstored group messages to the same
// devices.
type PresenceResult struct {
	Watchers, Changes int
	Presence, Message Spread
}

// Spread is how one event reached many devices, over several events.
type Spread struct {
	Deliveries int64 // over all events
	// Spread is, per event, the time from its first device receiving it to
	// its last; Total is their sum.
	Spread Percentiles
	Total  time.Duration
	// First is, per event, the time from its request (SetPresence or Send)
	// to its first device receiving it: for presence, it includes the
	// server's coalescing delay.
	First Percentiles
}

// Rate is deliveries per second of spread: how fast the server fanned an
// event out once the first device had it.
func (s Spread) Rate() float64 { return perSecond(s.Deliveries, s.Total) }

// presenceRound is one change or one message being measured: the watchers'
// goroutines record when each of them received it.
type presenceRound struct {
	index   int
	message bool                // a message round; else a change to state
	state   qimpb.PresenceState // a presence round's
	at      []atomic.Int64      // per watcher, Unix ns; 0 before
	count   atomic.Int64
	all     chan struct{} // closed when every watcher has it
}

func (r *presenceRound) record(i int) {
	if r.at[i].CompareAndSwap(0, time.Now().UnixNano()) && r.count.Add(1) == int64(len(r.at)) {
		close(r.all)
	}
}

// spread returns the round's first and last arrival, Unix ns.
func (r *presenceRound) spread() (first, last int64) {
	for i := range r.at {
		t := r.at[i].Load()
		if t == 0 {
			continue
		}
		if first == 0 || t < first {
			first = t
		}
		last = max(last, t)
	}
	return first, last
}

// PresenceFanout runs the presence-fanout scenario: one presence change of
// a user reaching its Watchers mutual contacts, against an unstored
// message of the same user to a group of the same devices, alternately,
// after one round of each that is not measured.
func PresenceFanout(ctx context.Context, e *Env, o PresenceOptions) (PresenceResult, error) {
	o.defaults()
	res := PresenceResult{Watchers: o.Watchers, Changes: o.Changes}
	star := e.User("pres-u", 0)
	e.progressf("presence-fanout: connecting %s and %d watchers", star, o.Watchers)
	us, err := dialAll(ctx, []*Env{e}, []string{star}, 1, nil)
	if err != nil {
		return res, err
	}
	u := us[0]
	defer closeAll(us)
	users := make([]string, o.Watchers)
	for i := range users {
		users[i] = e.User("pres-w", i)
	}
	ws, err := dialAll(ctx, []*Env{e}, users, 64, nil)
	if err != nil {
		return res, err
	}
	defer closeAll(ws)

	e.progressf("presence-fanout: %s and its %d watchers add each other to their contacts", star, o.Watchers)
	g, err := setupPresence(ctx, e, u, ws, users)
	if err != nil {
		return res, err
	}

	var (
		current atomic.Pointer[presenceRound]
		wg      sync.WaitGroup
	)
	runCtx, stop := context.WithCancel(ctx)
	defer func() {
		stop()
		wg.Wait()
	}()
	prefix := "presence-fanout " + g + " "
	for i, w := range ws {
		wg.Go(func() { watchPresence(runCtx, w, i, star, g, prefix, &current) })
	}
	// The user's own device may get its group messages: drain them.
	wg.Go(func() {
		for {
			select {
			case <-runCtx.Done():
				return
			case _, ok := <-u.Messages():
				if !ok {
					return
				}
			}
		}
	})

	// Round 0 of each kind warms up; the user starts online (a new
	// connection counts as in the foreground), so change k says away when
	// k is even.
	timeout := 30*time.Second + time.Duration(o.Watchers)*10*time.Millisecond
	var presence, message []time.Duration
	var presenceFirst, messageFirst []time.Duration
	lastChange := time.Now()
	for k := range o.Changes + 1 {
		state := qimpb.PresenceState_ONLINE
		if k%2 == 0 {
			state = qimpb.PresenceState_AWAY
		}
		sleepCtx(runCtx, o.Gap-time.Since(lastChange))
		lastChange = time.Now()
		spread, first, err := runRound(runCtx, &current, &presenceRound{index: k, state: state}, len(ws), timeout, func(ctx context.Context) error {
			_, err := u.SetPresence(ctx, state == qimpb.PresenceState_AWAY)
			return err
		})
		if err != nil {
			return res, fmt.Errorf("bench: presence-fanout change %d (%v): %w", k, state, err)
		}
		mspread, mfirst, err := runRound(runCtx, &current, &presenceRound{index: k, message: true}, len(ws), timeout, func(ctx context.Context) error {
			_, err := u.Send(ctx, client.ToGroup(g), client.Outgoing{Text: prefix + strconv.Itoa(k), NoOffline: true})
			return err
		})
		if err != nil {
			return res, fmt.Errorf("bench: presence-fanout message %d: %w", k, err)
		}
		if k == 0 {
			continue
		}
		e.progressf("  change %d: %v to the first watcher, %v more to the last; message: %v, %v more", k,
			first.Round(time.Microsecond), spread.Round(time.Microsecond), mfirst.Round(time.Microsecond), mspread.Round(time.Microsecond))
		presence, presenceFirst = append(presence, spread), append(presenceFirst, first)
		message, messageFirst = append(message, mspread), append(messageFirst, mfirst)
	}
	res.Presence = spreadOf(presence, presenceFirst, o.Watchers)
	res.Message = spreadOf(message, messageFirst, o.Watchers)
	return res, ctx.Err()
}

// setupPresence has u and the watchers ws (users) add each other to their
// contacts, makes a group of u's that they all join, and returns its id:
// within a minute and 50 ms per watcher.
func setupPresence(ctx context.Context, e *Env, u *client.Client, ws []*client.Client, users []string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute+time.Duration(len(ws))*50*time.Millisecond)
	defer cancel()
	star := u.User()
	err := forAll(ctx, len(ws), func(ctx context.Context, i int) error {
		if err := ws[i].AddContact(ctx, star); err != nil {
			return fmt.Errorf("bench: %s adds %s: %w", users[i], star, err)
		}
		if err := u.AddContact(ctx, users[i]); err != nil {
			return fmt.Errorf("bench: %s adds %s: %w", star, users[i], err)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	g, err := u.CreateGroup(ctx, "bench presence-fanout")
	if err != nil {
		return "", fmt.Errorf("bench: create group: %w", err)
	}
	if err := joinAll(ctx, e, ws, g.GetId()); err != nil {
		return "", err
	}
	for _, w := range ws {
		if !w.Granted(qimpb.Feature_FEATURE_PRESENCE) {
			return "", fmt.Errorf("bench: the server did not grant %s presence events", w.User())
		}
	}
	return g.GetId(), nil
}

// runRound makes r current, runs request (a presence change or a
// message), and waits until every one of n watchers received it: both
// within timeout. It returns the time from the first watcher's receipt to
// the last's, and from the request to the first watcher's.
func runRound(ctx context.Context, current *atomic.Pointer[presenceRound], r *presenceRound, n int, timeout time.Duration, request func(context.Context) error) (spread, first time.Duration, err error) {
	r.at, r.all = make([]atomic.Int64, n), make(chan struct{})
	current.Store(r)
	defer current.Store(nil)
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	if err := request(rctx); err != nil {
		return 0, 0, err
	}
	select {
	case <-r.all:
	case <-rctx.Done():
		if ctx.Err() != nil {
			return 0, 0, ctx.Err()
		}
		return 0, 0, fmt.Errorf("%d of %d watchers received it within %v", r.count.Load(), n, timeout)
	}
	f, l := r.spread()
	return time.Duration(l - f), time.Duration(f - start.UnixNano()), nil
}

// watchPresence records, for the current round, when watcher i (w)
// received it: a presence event of star in the round's state, or the
// round's message to group. It runs until ctx ends or w's session does.
func watchPresence(ctx context.Context, w *client.Client, i int, star, group, prefix string, current *atomic.Pointer[presenceRound]) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events():
			if !ok {
				return
			}
			p := ev.GetPresence()
			r := current.Load()
			if p == nil || r == nil || r.message || p.GetUser() != star || p.GetState() != r.state {
				continue
			}
			r.record(i)
		case m, ok := <-w.Messages():
			if !ok {
				return
			}
			r := current.Load()
			if r == nil || !r.message || m.GetToGroup() != group {
				continue
			}
			if k, ok := strings.CutPrefix(client.Text(m), prefix); ok && k == strconv.Itoa(r.index) {
				r.record(i)
			}
		}
	}
}

// spreadOf sums up the rounds of one kind, each to n watchers.
func spreadOf(spreads, firsts []time.Duration, n int) Spread {
	s := Spread{Deliveries: int64(len(spreads)) * int64(n)}
	for _, d := range spreads {
		s.Total += d
	}
	s.Spread = percentilesOf(spreads)
	s.First = percentilesOf(firsts)
	return s
}

// forAll calls f for each of 0..n-1, 64 at a time, and returns the first
// error; after one, it starts no more.
func forAll(ctx context.Context, n int, f func(context.Context, int) error) error {
	var (
		wg    sync.WaitGroup
		next  atomic.Int64
		first atomic.Pointer[error]
	)
	for range min(64, n) {
		wg.Go(func() {
			for first.Load() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(ctx, i); err != nil {
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

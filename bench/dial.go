package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qim-im/qim/client"
)

// dialAll connects one client per user, user i to nodes[i%len(nodes)], at
// most par at a time, retrying each a few times: a server under a
// connection storm may drop handshakes. Progress goes to nodes[0]'s. On
// error it closes what it opened.
func dialAll(ctx context.Context, nodes []*Env, users []string, par int, edit func(*client.Config)) ([]*client.Client, error) {
	e := nodes[0]
	out := make([]*client.Client, len(users))
	var (
		wg    sync.WaitGroup
		next  atomic.Int64
		done  atomic.Int64
		mu    sync.Mutex
		first error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopProgress := e.every(2*time.Second, func() {
		e.progressf("  connected %d/%d", done.Load(), len(users))
	})
	for range min(par, len(users)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(users) || ctx.Err() != nil {
					return
				}
				cfg := nodes[i%len(nodes)].ClientConfig(users[i])
				if edit != nil {
					edit(&cfg)
				}
				c, err := dialRetry(ctx, cfg)
				if err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("bench: connect %s: %w", users[i], err)
					}
					mu.Unlock()
					cancel()
					return
				}
				out[i] = c
				done.Add(1)
			}
		})
	}
	wg.Wait()
	stopProgress()
	if first != nil {
		closeAll(out)
		return nil, first
	}
	return out, nil
}

// rotate returns nodes turned left by k: node k first, then k+1, and so on
// around; dialAll with it puts user i on node (i+k) % len(nodes).
func rotate(nodes []*Env, k int) []*Env {
	k %= len(nodes)
	return append(slices.Clone(nodes[k:]), nodes[:k]...)
}

func dialRetry(ctx context.Context, cfg client.Config) (*client.Client, error) {
	var err error
	for attempt := range 5 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
			}
		}
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var c *client.Client
		c, err = client.Dial(dctx, cfg)
		cancel()
		if err == nil {
			return c, nil
		}
		var qe *client.Error
		if errors.As(err, &qe) {
			return nil, err // a refusal: retrying will not help
		}
	}
	return nil, err
}

// closeAll closes every client, in parallel, and waits.
func closeAll(cs []*client.Client) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256)
	for _, c := range cs {
		if c == nil {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			c.Close()
			<-sem
		})
	}
	wg.Wait()
}

// every calls f every period until the returned stop is called, when
// e.Progress is set.
func (e *Env) every(period time.Duration, f func()) (stop func()) {
	if e.Progress == nil {
		return func() {}
	}
	done := make(chan struct{})
	t := time.NewTicker(period)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				f()
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

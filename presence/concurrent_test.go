package presence

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestConcurrent has many goroutines join, leave and toggle away for a few
// users at random, in rounds separated by a quiet spell longer than grace
// plus a window. It checks, for each user, that the published changes are
// in order (since strictly increasing, at least a window apart, each
// different from the one before) and, after each quiet spell, that Get and
// the last published change both match the user's connections. With a slow
// Publish (up to 5 s a change), changes queue up behind each other, and a
// tracker that published a user's changes from several goroutines would
// deliver them out of order. Run it with the race detector.
func TestConcurrent(t *testing.T) {
	for _, tt := range []struct {
		name  string
		delay time.Duration // Publish sleeps up to delay
	}{
		{name: "fast publish"},
		{name: "slow publish", delay: 5 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) { testConcurrent(t, tt.delay) })
	}
}

func testConcurrent(t *testing.T, delay time.Duration) {
	const (
		workers = 16
		users   = 24
		rounds  = 4
		ops     = 100 // per worker and round
	)
	synctest.Test(t, func(t *testing.T) {
		r := newRecorder()
		publish := r.publish
		var rngMu sync.Mutex
		prng := rand.New(rand.NewPCG(1, 2))
		if delay > 0 {
			publish = func(c Change) {
				rngMu.Lock()
				d := time.Duration(prng.Int64N(int64(delay)))
				rngMu.Unlock()
				time.Sleep(d)
				r.publish(c)
			}
		}
		l := NewLocal(Config{Publish: publish})
		defer l.Close()
		name := func(u int) string { return fmt.Sprint("user", u) }

		type held struct {
			c    Conn
			user int
			away bool
		}
		conns := make([][]held, workers) // conns[w] owned by worker w during a round
		var leftMu sync.Mutex
		lastLeave := make(map[string]int64) // user: ms since start of its latest Leave

		for round := range rounds {
			var wg sync.WaitGroup
			for w := range workers {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(round), uint64(w)))
					for range ops {
						time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
						mine := conns[w]
						switch op := rng.IntN(10); {
						case op < 4 || len(mine) == 0:
							u := rng.IntN(users)
							a := rng.IntN(3) == 0
							conns[w] = append(mine, held{l.Join("app", name(u), fmt.Sprint("dev", w), a), u, a})
						case op < 8:
							i := rng.IntN(len(mine))
							h := mine[i]
							h.c.Leave()
							leftMu.Lock()
							lastLeave[name(h.user)] = time.Since(r.start).Milliseconds()
							leftMu.Unlock()
							conns[w] = append(mine[:i], mine[i+1:]...)
						default:
							i := rng.IntN(len(mine))
							mine[i].away = !mine[i].away
							mine[i].c.SetAway(mine[i].away)
						}
					}
					if round == rounds-1 { // the last round ends with every user gone
						for _, h := range conns[w] {
							h.c.Leave()
							leftMu.Lock()
							lastLeave[name(h.user)] = time.Since(r.start).Milliseconds()
							leftMu.Unlock()
						}
						conns[w] = nil
					}
				})
			}
			wg.Wait()
			// Long enough for the last grace period and window, and for
			// the backlog of a slow Publish.
			time.Sleep(DefaultGrace + DefaultCoalesce + time.Millisecond + 20*delay)
			synctest.Wait()

			// What each user's connections make it.
			want := make(map[string]published)
			for u := range users {
				want[name(u)] = published{User: name(u), State: offline, LastSeen: lastLeave[name(u)]}
			}
			for _, mine := range conns {
				for _, h := range mine {
					p := want[name(h.user)]
					switch {
					case !h.away:
						p.State = online
					case p.State == offline:
						p.State = away
					}
					want[name(h.user)] = p
				}
			}
			events := r.events()
			last := make(map[string]published)
			for _, e := range events {
				last[e.User] = e
			}
			base := r.start.UnixMilli()
			for u := range users {
				n := name(u)
				w := want[n]
				g := l.Get("app", []string{n})[0]
				if g.State != w.State || g.State == offline && g.LastSeen-base != w.LastSeen {
					t.Errorf("round %d: Get(%s) = %v, last_seen %d ms, want %v, last_seen %d ms",
						round, n, g.State, g.LastSeen-base, w.State, w.LastSeen)
				}
				if e, ok := last[n]; !ok && w.State != offline || ok && (e.State != g.State || e.Since != g.Since-base) {
					t.Errorf("round %d: last change of %s published %v, Get says %v", round, n, e, g)
				}
			}
		}

		byUser := make(map[string][]published)
		for _, e := range r.events() {
			byUser[e.User] = append(byUser[e.User], e)
		}
		for u, es := range byUser {
			for i := 1; i < len(es); i++ {
				prev, e := es[i-1], es[i]
				if e.Since <= prev.Since || e.State == prev.State || delay == 0 && e.At-prev.At < DefaultCoalesce {
					t.Errorf("%s: %v\n  after %v", u, e, prev)
				}
			}
			if es[0].State == offline {
				t.Errorf("%s: first change %v", u, es[0])
			}
		}
		t.Logf("%d changes published", len(r.events()))
	})
}

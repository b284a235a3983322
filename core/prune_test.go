package core

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/qim-im/qim/store"
)

// pruneStore records the calls of PruneDedup; the hub calls nothing else
// of it in these tests (the nil Store would panic).
type pruneStore struct {
	store.Store
	fail bool

	mu    sync.Mutex
	calls []time.Time // the before of each call
}

func (s *pruneStore) PruneDedup(_ context.Context, before time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, before)
	if s.fail {
		return 0, errors.New("prune failed")
	}
	return 3, nil
}

func (s *pruneStore) befores() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.calls...)
}

// TestPruneDedup checks the schedule of the de-duplication pruner: the
// first run a minute after start, then every window/24 (at most hourly),
// each forgetting what is older than the window; a failing prune is
// retried at the next run; a negative window never prunes; Close stops it.
func TestPruneDedup(t *testing.T) {
	for _, tt := range []struct {
		name   string
		window time.Duration
		fail   bool
		// runs after 59 s, 61 s, 1 min + every + 1 s
		want0, want1, want2 int
		every               time.Duration
	}{
		{"default", 0, false, 0, 1, 2, time.Hour},
		{"two days", 48 * time.Hour, false, 0, 1, 2, time.Hour},
		{"one hour", time.Hour, false, 0, 1, 2, 150 * time.Second},
		{"failing", 0, true, 0, 1, 2, time.Hour},
		{"never", -1, false, 0, 0, 0, time.Hour},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				st := &pruneStore{fail: tt.fail}
				h, err := NewHub(Config{Store: st, DedupWindow: tt.window})
				if err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				check := func(at time.Duration, want int) {
					t.Helper()
					time.Sleep(start.Add(at).Sub(time.Now()))
					synctest.Wait()
					got := st.befores()
					if len(got) != want {
						t.Fatalf("after %v: %d prunes, want %d", at, len(got), want)
					}
					window := tt.window
					if window == 0 {
						window = defaultDedupWindow
					}
					if want > 0 {
						if ran := got[want-1].Add(window); ran.After(time.Now()) || time.Now().Sub(ran) > 2*time.Second {
							t.Fatalf("prune %d forgot before %v, want about now - %v (%v)", want, got[want-1], window, time.Now())
						}
					}
				}
				check(59*time.Second, tt.want0)
				check(61*time.Second, tt.want1)
				check(time.Minute+tt.every+time.Second, tt.want2)
				if err := h.Close(); err != nil {
					t.Fatal(err)
				}
				n := len(st.befores())
				time.Sleep(3 * time.Hour)
				if got := len(st.befores()); got != n {
					t.Fatalf("%d prunes after Close", got-n)
				}
			})
		})
	}
}

package push_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/qim-im/qim/metrics"
	"github.com/qim-im/qim/push"
)

// TestBackoffSchedule runs a worker with its default backoff and polling
// against a gateway that is down for good, for 3 hours of fake time: the
// job is retried with the default backoff (1 s doubling to 5 minutes,
// jittered) and given up once its message is older than MaxAge (2 h
// here, to keep the test short: every poll is a real store read),
// counted as expired. The store and the gateway are real and outside the
// bubble; only the worker's clock is fake.
func TestBackoffSchedule(t *testing.T) {
	st := pebble(t)
	var requests atomic.Int64
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer gw.Close()
	m := metrics.New()

	synctest.Test(t, func(t *testing.T) {
		w, err := push.New(push.Config{
			Store:   st,
			URL:     gw.URL,
			Secret:  testSecret,
			Metrics: m,
			MaxAge:  2 * time.Hour,
			// No idle connections: their reader goroutines, blocked on
			// the network, would keep the bubble's clock from advancing.
			Client: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			w.Run(ctx)
		}()
		appendMsg(t, st, text("alice", "bob", "", "hello?"), time.Now()) // stamped with the fake clock

		// The first attempts: at 0 or 1 s (the first poll), then after
		// 0.5-1 s, 1-2 s, 2-4 s, 4-8 s, each up to a poll (1 s) later.
		time.Sleep(8 * time.Second)
		if n := requests.Load(); n < 3 || n > 5 {
			t.Errorf("%d attempts in the first 8 s, want 3 to 5", n)
		}
		// After the ninth failure (255 to 520 s in), one attempt every
		// 150 to 301 s.
		time.Sleep(2*time.Hour - 8*time.Second - time.Minute)
		n := requests.Load()
		if lo, hi := int64(9+(7200-520)/301), int64(9+(7200-255)/150+1); n < lo || n > hi {
			t.Errorf("%d attempts in 2 h, want %d to %d", n, lo, hi)
		}
		if v := sample(t, m, "qim_push_dropped_total", "reason", "expired"); v != 0 {
			t.Errorf("given up before 2 h")
		}
		time.Sleep(time.Hour)
		if b := backlog(t, st); b != 0 {
			t.Errorf("backlog %d after 3 h, want the job given up", b)
		}
		if v := sample(t, m, "qim_push_dropped_total", "reason", "expired"); v != 1 {
			t.Errorf("qim_push_dropped_total{reason=expired} = %v, want 1", v)
		}
		if after := requests.Load(); after > n+1 {
			t.Errorf("%d attempts in the third hour, want at most 1 before the job is given up", after-n)
		}
		cancel()
		<-done
	})
}

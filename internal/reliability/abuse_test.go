package reliability_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
)

// TestRateLimit has one user flood the server (16 senders on one
// connection, as fast as answers come) while another pair chats: the flood
// is throttled with RATE_LIMITED, and the pair's latency stays flat.
func TestRateLimit(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{SendRate: 200, SendBurst: 100})
	flooder := dial(t, demoConfig(srv, "flooder", "d"))
	alice := dial(t, demoConfig(srv, "alice", "d"))
	bob := dial(t, demoConfig(srv, "bob", "d"))

	pairLatency := func(n int) []time.Duration {
		var lat []time.Duration
		for i := range n {
			start := time.Now()
			if _, err := alice.Send(ctxT(t), client.ToUser("bob"), client.Outgoing{Text: fmt.Sprint("p", i)}); err != nil {
				t.Fatalf("alice: %v", err)
			}
			recv(t, bob, 1, waitTime)
			lat = append(lat, time.Since(start))
		}
		slices.Sort(lat)
		return lat
	}
	before := pairLatency(30)

	var sent, limited, other atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, err := flooder.Send(ctxT(t), client.ToUser("victim"), client.Outgoing{Text: "flood"})
				var ce *client.Error
				switch {
				case err == nil:
					sent.Add(1)
				case errors.As(err, &ce) && ce.Code == qimpb.Code_RATE_LIMITED:
					limited.Add(1)
				default:
					other.Add(1)
				}
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	during := pairLatency(30)
	close(stop)
	wg.Wait()

	t.Logf("flood: %d stored, %d RATE_LIMITED, %d other errors; pair latency p50 %v before, %v during; p90 %v before, %v during",
		sent.Load(), limited.Load(), other.Load(), percentile(before, 50), percentile(during, 50), percentile(before, 90), percentile(during, 90))
	if limited.Load() == 0 {
		t.Fatal("the flood was never told RATE_LIMITED")
	}
	if other.Load() != 0 {
		t.Fatalf("%d flood requests failed with another error", other.Load())
	}
	// Generous: a shared 2-core machine; the point is that the pair is not
	// stuck behind the flood.
	if p50 := percentile(during, 50); p50 > 200*time.Millisecond {
		t.Fatalf("pair p50 latency %v during the flood", p50)
	}
}

// TestGroupSizeLimit checks that a full group refuses new members with
// LIMIT_EXCEEDED.
func TestGroupSizeLimit(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{MaxGroupMembers: 3})
	owner := dial(t, demoConfig(srv, "owner", "d"))
	g, err := owner.CreateGroup(ctxT(t), "small")
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"u1", "u2"} {
		if err := owner.Invite(ctxT(t), g.Id, u); err != nil {
			t.Fatal(err)
		}
	}
	var ce *client.Error
	if err := owner.Invite(ctxT(t), g.Id, "u3"); !errors.As(err, &ce) || ce.Code != qimpb.Code_LIMIT_EXCEEDED {
		t.Fatalf("invite into a full group: %v, want LIMIT_EXCEEDED", err)
	}
	late := dial(t, demoConfig(srv, "u4", "d"))
	if _, err := late.JoinGroup(ctxT(t), g.Id); !errors.As(err, &ce) || ce.Code != qimpb.Code_LIMIT_EXCEEDED {
		t.Fatalf("join a full group: %v, want LIMIT_EXCEEDED", err)
	}
}

// TestAuthFailuresSlowedDown checks that repeated failed CONNECTs from one
// address are answered more and more slowly, that the answer never says
// whether the user exists, and that a good token is not slowed.
func TestAuthFailuresSlowedDown(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	attempt := func(user, token string) (time.Duration, error) {
		cfg := demoConfig(srv, user, "d")
		cfg.Token = token
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), waitTime)
		defer cancel()
		c, err := client.Dial(ctx, cfg)
		if err == nil {
			c.Close()
		}
		return time.Since(start), err
	}
	var lat []time.Duration
	reasons := map[string]bool{}
	for i := range 9 {
		user := []string{"alice", "nobody-ever"}[i%2] // an existing-looking and a never-seen user
		d, err := attempt(user, srv.Token("someone-else"))
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Code != qimpb.Code_UNAUTHENTICATED {
			t.Fatalf("attempt %d: %v, want UNAUTHENTICATED", i, err)
		}
		reasons[ce.Reason] = true
		lat = append(lat, d)
	}
	t.Logf("failed CONNECT answered after %v", lat)
	if len(reasons) != 1 {
		t.Fatalf("refusals differ by user: %v", reasons)
	}
	// The 5 first failures are free; the 9th waits 50ms<<3 = 400 ms.
	if lat[8] < 400*time.Millisecond {
		t.Fatalf("9th failure answered after %v, want at least 400ms", lat[8])
	}
	// A 10th failure would wait 800 ms; a good token must not wait at all.
	// The bound is the penalty, not a handshake time, so that a loaded
	// machine (CI answered a handshake in 300 ms) cannot fail it.
	if d, err := attempt("alice", srv.Token("alice")); err != nil || d >= 800*time.Millisecond {
		t.Fatalf("good token after failures: %v after %v, want no back-off", err, d)
	}
}

// TestHandshakeFloodRetry checks that beyond the handshake rate the server
// asks new connections to validate their address (QUIC Retry), and that
// real clients still connect through it.
func TestHandshakeFloodRetry(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{HandshakeRate: 5})
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range 40 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), waitTime)
			defer cancel()
			c, err := client.Dial(ctx, demoConfig(srv, fmt.Sprint("u", i), "d"))
			if err != nil {
				failed.Add(1)
				t.Errorf("dial %d: %v", i, err)
				return
			}
			c.Close()
		})
	}
	wg.Wait()
	t.Logf("40 connections at once: %d asked for Retry, %d failed", srv.Retries(), failed.Load())
	if srv.Retries() == 0 {
		t.Fatal("no connection was asked to validate its address")
	}
}

package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
)

// waitTime bounds a single wait for the server.
const waitTime = 20 * time.Second

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), waitTime)
	t.Cleanup(cancel)
	return ctx
}

// recv reads n messages from c or fails.
func recv(t testing.TB, c *client.Client, n int) {
	t.Helper()
	timeout := time.After(waitTime)
	for i := range n {
		select {
		case _, ok := <-c.Messages():
			if !ok {
				t.Fatalf("%s: session ended after %d of %d messages: %v", c.User(), i, n, c.Err())
			}
		case <-timeout:
			t.Fatalf("%s: got %d of %d messages", c.User(), i, n)
		}
	}
}

// TestServerMetrics runs a real server with metrics on, has alice send bob
// durable and ephemeral messages, and checks that every figure moved by
// exactly what happened.
func TestServerMetrics(t *testing.T) {
	const durable, ephemeral = 40, 15
	srv := testserver.Start(t, testserver.Options{Metrics: "127.0.0.1:0"})
	if srv.MetricsURL == "" {
		t.Fatal("the server serves no metrics")
	}
	if v := scrape(t, srv.MetricsURL).value("qim_sessions"); v != 0 {
		t.Fatalf("qim_sessions = %v before anyone connected", v)
	}

	alice := testserver.Dial(t, srv.ClientConfig("alice", "phone"))
	bob := testserver.Dial(t, srv.ClientConfig("bob", "phone"))
	// A first message starts bob's pusher for the conversation. Until it
	// has read bob's cursor, it may find messages in the store before they
	// are routed to it, and push them untimed; afterwards, every message
	// comes to it live.
	if _, err := alice.Send(ctxT(t), client.ToUser("bob"), client.Outgoing{Text: "hello"}); err != nil {
		t.Fatal(err)
	}
	recv(t, bob, 1)
	var before families
	eventually(t, waitTime, func() string { return "the first push to be counted" }, func() bool {
		before = scrape(t, srv.MetricsURL)
		return before.value("qim_messages_out_total") == 1
	})

	for i := range durable {
		if _, err := alice.Send(ctxT(t), client.ToUser("bob"), client.Outgoing{Text: fmt.Sprint("d", i)}); err != nil {
			t.Fatalf("send durable %d: %v", i, err)
		}
	}
	recv(t, bob, durable)
	for i := range ephemeral {
		if _, err := alice.Send(ctxT(t), client.ToUser("bob"), client.Outgoing{Text: fmt.Sprint("e", i), NoOffline: true}); err != nil {
			t.Fatalf("send ephemeral %d: %v", i, err)
		}
	}
	recv(t, bob, ephemeral)

	// A push is counted just after it is handed to the stream's writer,
	// which may be after bob has it: wait for the last ones.
	const pushed = durable + ephemeral
	var after families
	eventually(t, waitTime, func() string { return "the pushes to be counted" }, func() bool {
		after = scrape(t, srv.MetricsURL)
		return after.value("qim_messages_out_total")-before.value("qim_messages_out_total") >= pushed
	})
	for _, tt := range []struct {
		sample
		want float64
	}{
		{sample{"qim_connections", nil}, 2},
		{sample{"qim_sessions", nil}, 2},
		{sample{"qim_connects_total", []string{"result", "ok"}}, 2},
	} {
		if v := after.value(tt.name, tt.labels...); v != tt.want {
			t.Errorf("%v = %v, want %v", tt.sample, v, tt.want)
		}
	}
	for _, tt := range []struct {
		sample
		want float64 // the change since before
	}{
		{sample{"qim_requests_total", []string{"type", "MESSAGE"}}, pushed},
		{sample{"qim_responses_total", []string{"code", "OK"}}, pushed},
		{sample{"qim_messages_in_total", []string{"kind", "durable"}}, durable},
		{sample{"qim_messages_in_total", []string{"kind", "ephemeral"}}, ephemeral},
		// alice's own device is not pushed her messages: only bob's is.
		{sample{"qim_messages_out_total", nil}, pushed},
		{sample{"qim_delivery_latency_seconds_count", nil}, pushed},
		{sample{"qim_store_commit_messages_sum", nil}, durable},
		{sample{"qim_store_commit_errors_total", nil}, 0},
		{sample{"qim_queue_drops_total", []string{"queue", "ephemeral"}}, 0},
		{sample{"qim_queue_drops_total", []string{"queue", "live"}}, 0},
	} {
		if d := after.value(tt.name, tt.labels...) - before.value(tt.name, tt.labels...); d != tt.want {
			t.Errorf("%v moved by %v, want %v", tt.sample, d, tt.want)
		}
	}
	commits := after.value("qim_store_commit_seconds_count") - before.value("qim_store_commit_seconds_count")
	if counted := after.value("qim_store_commit_messages_count") - before.value("qim_store_commit_messages_count"); commits < 1 || commits > durable || commits != counted {
		t.Errorf("%v store commits timed and %v counted for %d messages", commits, counted, durable)
	}
	if sum := after.value("qim_delivery_latency_seconds_sum"); sum <= 0 || sum > pushed*5 {
		t.Errorf("delivery latency sum %vs for %d pushes", sum, pushed)
	}
	if after.value("go_goroutines") == 0 || after.value("process_resident_memory_bytes") == 0 {
		t.Error("runtime and process figures missing")
	}

	alice.Close()
	bob.Close()
	eventually(t, waitTime, func() string { return "sessions and connections to close" }, func() bool {
		s := scrape(t, srv.MetricsURL)
		return s.value("qim_sessions") == 0 && s.value("qim_connections") == 0
	})

	resp, body := get(t, srv.MetricsURL+"/debug/pprof/heap?gc=1")
	if resp.StatusCode != http.StatusOK || len(body) == 0 {
		t.Fatalf("GET /debug/pprof/heap?gc=1: %s, %d bytes", resp.Status, len(body))
	}
}

// TestServerMetricsRefusals checks the labels of refused CONNECTs and
// rate-limited requests.
func TestServerMetricsRefusals(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{Metrics: "127.0.0.1:0", SendRate: 1, SendBurst: 2})
	cfg := srv.ClientConfig("mallory", "d")
	cfg.Token = srv.Token("someone-else")
	if c, err := client.Dial(ctxT(t), cfg); err == nil {
		c.Close()
		t.Fatal("a foreign token connected")
	}
	alice := testserver.Dial(t, srv.ClientConfig("alice", "d"))
	limited := 0
	for i := range 6 {
		_, err := alice.Send(ctxT(t), client.ToUser("bob"), client.Outgoing{Text: fmt.Sprint(i)})
		var ce *client.Error
		switch {
		case err == nil:
		case errors.As(err, &ce) && ce.Code == qimpb.Code_RATE_LIMITED:
			limited++
		default:
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if limited == 0 {
		t.Fatal("nothing was rate-limited")
	}
	got := scrape(t, srv.MetricsURL)
	for _, tt := range []struct {
		sample
		want float64
	}{
		{sample{"qim_connects_total", []string{"result", "UNAUTHENTICATED"}}, 1},
		{sample{"qim_connects_total", []string{"result", "ok"}}, 1},
		{sample{"qim_responses_total", []string{"code", "RATE_LIMITED"}}, float64(limited)},
		{sample{"qim_responses_total", []string{"code", "OK"}}, float64(6 - limited)},
		{sample{"qim_requests_total", []string{"type", "MESSAGE"}}, 6},
		{sample{"qim_messages_in_total", []string{"kind", "durable"}}, float64(6 - limited)},
	} {
		if v := got.value(tt.name, tt.labels...); v != tt.want {
			t.Errorf("%v = %v, want %v", tt.sample, v, tt.want)
		}
	}
}

// TestServerMetricsDrops has a device stop reading while messages keep
// coming for it: its pusher's buffers fill, and what they drop is counted.
func TestServerMetricsDrops(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{Metrics: "127.0.0.1:0", SendRate: -1})
	slowCfg := srv.ClientConfig("rcv", "phone")
	slowCfg.Inbox = 1
	testserver.Dial(t, slowCfg) // never read
	flooder := testserver.Dial(t, srv.ClientConfig("flood", "job"))

	for _, tt := range []struct {
		queue     string
		noOffline bool
		n         int
	}{
		// 64 unacknowledged pushes, then 256 in the buffer.
		{"live", false, 600},
		// No window: the stream's flow-control window (512 KiB, some 260
		// of these messages), its writer's queue (128), then 256 in the
		// buffer.
		{"ephemeral", true, 3000},
	} {
		t.Run(tt.queue, func(t *testing.T) {
			text := fmt.Sprintf("%02000d", 0)
			var wg sync.WaitGroup
			for w := range 8 {
				wg.Go(func() {
					for i := w; i < tt.n; i += 8 {
						if _, err := flooder.Send(ctxT(t), client.ToUser("rcv"), client.Outgoing{Text: text, NoOffline: tt.noOffline}); err != nil {
							t.Errorf("send %d: %v", i, err)
							return
						}
					}
				})
			}
			wg.Wait()
			got := scrape(t, srv.MetricsURL)
			if v := got.value("qim_queue_drops_total", "queue", tt.queue); v == 0 {
				t.Errorf("%d messages to a device that does not read, and no drop from its %s buffer", tt.n, tt.queue)
			}
		})
	}
}

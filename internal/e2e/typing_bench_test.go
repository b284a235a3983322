package e2e

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/testserver"
)

// BenchmarkTypingStorm measures the latency of messages from carol to bob
// (send to receipt, one at a time) while alice floods bob with typing
// notifications in another conversation, beside the same messages with
// no storm (the baseline, "quiet"), in one run. Two storms: typing in QUIC
// datagrams, and typing as requests on a stream (a client without
// datagrams). Typing never shares a stream with messages and is limited
// per user and conversation, so the storm should cost the messages
// nothing but the CPU the server spends refusing it. It reports p50 and
// p99 in ms, and what the storm sent.
func BenchmarkTypingStorm(b *testing.B) {
	srv := testserver.Start(b, testserver.Options{SendRate: -1})
	noDatagrams := func(c *client.Config) {
		c.QUICConfig = &quic.Config{KeepAlivePeriod: 25 * time.Second, MaxIncomingStreams: 1000, MaxIncomingUniStreams: -1}
	}
	for _, mode := range []string{"quiet", "storm-datagrams", "storm-stream"} {
		b.Run(mode, func(b *testing.B) {
			var change func(*client.Config)
			if mode == "storm-stream" {
				change = noDatagrams
			}
			alice := dialVia(b, srv, srv.Addr, "alice-"+mode, change)
			bob := dialVia(b, srv, srv.Addr, "bob-"+mode, nil)
			carol := dialVia(b, srv, srv.Addr, "carol-"+mode, nil)
			go func() {
				for range bob.Events() {
				}
			}()
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			var typed int
			if mode != "quiet" {
				wg.Go(func() {
					for ctx.Err() == nil {
						alice.Typing(ctx, client.ToUser(bob.User()), true)
						typed++
						if mode == "storm-datagrams" {
							time.Sleep(50 * time.Microsecond) // Typing returns at once: pace it to the network
						}
					}
				})
			}
			lat := make([]time.Duration, 0, b.N)
			start := time.Now()
			for i := 0; b.Loop(); i++ {
				t0 := time.Now()
				if _, err := carol.Send(ctx, client.ToUser(bob.User()), client.Outgoing{Text: fmt.Sprint(i)}); err != nil {
					b.Fatal(err)
				}
				select {
				case <-bob.Messages():
				case <-time.After(10 * time.Second):
					b.Fatal("no message within 10 s")
				}
				lat = append(lat, time.Since(t0))
			}
			elapsed := time.Since(start)
			cancel()
			wg.Wait()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(typed)/elapsed.Seconds(), "typing/s")
		})
	}
}

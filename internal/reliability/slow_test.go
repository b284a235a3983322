package reliability_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// TestSlowConsumer has a device stop reading (its client Inbox holds one
// message) while 3,000 messages arrive for it in one conversation, and
// another pair of users chats meanwhile. The pair is served promptly, the
// heap stays bounded, the slow device is not cut off, and once it reads
// again it gets all 3,000, once, in order.
func TestSlowConsumer(t *testing.T) {
	const writers = 16
	flood := 3000
	rounds := 100
	if soak() {
		flood, rounds = 30000, 1000
	}
	srv := testserver.Start(t, testserver.Options{SendRate: -1}) // this scenario is not about rate limits
	slowCfg := demoConfig(srv, "rcv", "phone")
	slowCfg.Inbox = 1
	slow := dial(t, slowCfg)

	floodCfg := demoConfig(srv, "flood", "job")
	floodCfg.SendOnly = true
	flooder := dial(t, floodCfg)
	carol := dial(t, demoConfig(srv, "carol", "phone"))
	dave := dial(t, demoConfig(srv, "dave", "phone"))

	// The pair's latency with nothing else going on.
	closed := make(chan struct{})
	close(closed)
	baseline, _ := pingPong(t, carol, dave, 25, closed)
	slices.Sort(baseline)

	before := heapAfterGC()
	sampler := startHeapSampler(t, 50*time.Millisecond)
	conv := store.DirectConv("flood", "rcv")
	var (
		mu   sync.Mutex
		sent = make(map[string]sentMsg) // guarded by mu
		wg   sync.WaitGroup
	)
	floodStart := time.Now()
	var floodTime time.Duration
	floodDone := make(chan struct{})
	go func() {
		defer close(floodDone)
		defer func() { floodTime = time.Since(floodStart) }()
		for w := range writers {
			wg.Go(func() {
				for i := w; i < flood; i += writers {
					cid := fmt.Sprintf("w%02d-%05d", w, i)
					ctx, cancel := context.WithTimeout(t.Context(), waitTime)
					ack, err := flooder.Send(ctx, client.ToUser("rcv"), client.Outgoing{Text: cid, ClientMsgID: cid})
					cancel()
					if err != nil {
						t.Errorf("flood %s: %v", cid, err)
						return
					}
					mu.Lock()
					sent[cid] = sentMsg{conv: conv, id: ack.GetId(), seq: ack.GetSeq()}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}()

	// Meanwhile carol and dave play ping-pong, for at least rounds rounds
	// and until the flood is stored.
	hops, during := pingPong(t, carol, dave, rounds, floodDone)
	if t.Failed() {
		t.FailNow()
	}
	slices.Sort(hops)
	slices.Sort(during)
	t.Logf("flood of %d messages stored in %v by %d writers on one stream", flood, floodTime.Round(time.Millisecond), writers)
	t.Logf("carol<->dave alone: %d hops, median %v, max %v", len(baseline),
		percentile(baseline, 50).Round(time.Microsecond), percentile(baseline, 100).Round(time.Microsecond))
	t.Logf("carol<->dave with the flood: %d hops, %d of them while it was being stored: median %v, p99 %v, max %v (during the flood: median %v, max %v)",
		len(hops), len(during),
		percentile(hops, 50).Round(time.Microsecond), percentile(hops, 99).Round(time.Microsecond), hops[len(hops)-1].Round(time.Microsecond),
		percentile(during, 50).Round(time.Microsecond), percentile(during, 100).Round(time.Microsecond))
	if hops[len(hops)-1] > 5*time.Second {
		t.Errorf("a hop took %v while another device was slow", hops[len(hops)-1])
	}

	// The slow device was not cut off.
	select {
	case <-slow.Done():
		t.Fatalf("slow device disconnected: %v", slow.Err())
	default:
	}
	stalled := heapAfterGC()

	start := time.Now()
	got := recv(t, slow, flood, 60*time.Second)
	drainTime := time.Since(start)
	quiet(t, slow)
	peak := sampler.Stop()
	after := heapAfterGC()
	a := checkConv(t, "rcv/phone", conv, got, sent)
	checkWriterOrder(t, got)
	t.Logf("slow device then read %d messages in %v: %s", len(got), drainTime.Round(time.Millisecond), a)
	t.Logf("heap in use (server and clients, one process): before %s, stalled with the flood stored %s, peak %s, after %s",
		mib(before), mib(stalled), mib(peak), mib(after))
	if !a.clean() || a.unacked != 0 {
		t.Errorf("audit: %s", a)
	}
	if peak > backlogHeapLimit {
		t.Errorf("heap peaked at %s, above %s", mib(peak), mib(backlogHeapLimit))
	}
}

// pingPong has a and b send each other a message in turn, for at least
// rounds rounds and until busy is closed. It returns every hop's time, from
// the Send call to the receipt, and those of the hops that started before
// busy was closed.
func pingPong(t *testing.T, a, b *client.Client, rounds int, busy <-chan struct{}) (hops, during []time.Duration) {
	t.Helper()
	for r := 0; ; r++ {
		running := true
		select {
		case <-busy:
			running = false
		default:
		}
		if r >= rounds && !running {
			return hops, during
		}
		for _, hop := range []struct{ from, to *client.Client }{{a, b}, {b, a}} {
			text := fmt.Sprintf("%s round %d", hop.from.User(), r)
			start := time.Now()
			if _, err := hop.from.Send(ctxT(t), client.ToUser(hop.to.User()), client.Outgoing{Text: text}); err != nil {
				t.Fatalf("%s: %v", text, err)
			}
			m := recv(t, hop.to, 1, 5*time.Second)[0]
			took := time.Since(start)
			hops = append(hops, took)
			if running {
				during = append(during, took)
			}
			if client.Text(m) != text {
				t.Fatalf("%s got %q, want %q", hop.to.User(), client.Text(m), text)
			}
		}
	}
}

// checkWriterOrder checks that the messages of each flood writer ("wNN-i")
// appear in the order it sent them.
func checkWriterOrder(t testing.TB, msgs []*qimpb.Message) {
	t.Helper()
	last := make(map[string]string)
	for _, m := range msgs {
		cid := m.GetClientMsgId()
		w := cid[:3]
		if prev, ok := last[w]; ok && cid <= prev {
			t.Errorf("writer %s: %s after %s", w, cid, prev)
		}
		last[w] = cid
	}
}

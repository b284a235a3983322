package reliability_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// backlogHeapLimit bounds the process's heap (server and clients: the
// server runs in the test process) while a device drains its backlog.
const backlogHeapLimit = 256 << 20

// TestBacklog10k keeps a device offline while 10,000 messages are sent to
// its user across 50 conversations (40 1:1 conversations and 10 groups, 60
// senders at once), then connects it: it receives all of them, each once,
// in order per conversation, while the heap stays bounded. QIM_SOAK=1 sends
// 100,000.
func TestBacklog10k(t *testing.T) {
	const directs, groups, perConv = 40, 10, 200
	scale := 1
	if soak() {
		scale = 10
	}
	srv := testserver.Start(t, testserver.Options{SendRate: -1}) // this scenario is not about rate limits

	// The receiver's device has been seen before, then goes offline.
	dial(t, demoConfig(srv, "rcv", "phone")).Close()
	setupCfg := demoConfig(srv, "rcv", "setup")
	setupCfg.SendOnly = true
	setup := dial(t, setupCfg)

	type job struct {
		sender string
		to     client.Peer
		conv   string
		n      int
	}
	var jobs []job
	for i := range directs {
		s := fmt.Sprintf("d%02d", i)
		jobs = append(jobs, job{s, client.ToUser("rcv"), store.DirectConv(s, "rcv"), perConv * scale})
	}
	for i := range groups {
		g, err := setup.CreateGroup(ctxT(t), fmt.Sprintf("backlog %d", i))
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{fmt.Sprintf("g%02da", i), fmt.Sprintf("g%02db", i)} {
			if err := setup.Invite(ctxT(t), g.GetId(), s); err != nil {
				t.Fatal(err)
			}
			jobs = append(jobs, job{s, client.ToGroup(g.GetId()), store.GroupConv(g.GetId()), perConv * scale / 2})
		}
	}
	setup.Close()

	var (
		mu   sync.Mutex
		sent = make(map[string]sentMsg)
		want = make(map[string]int)
		wg   sync.WaitGroup
	)
	start := time.Now()
	for _, j := range jobs {
		cfg := demoConfig(srv, j.sender, "phone")
		cfg.SendOnly = true
		c := dial(t, cfg)
		wg.Go(func() {
			defer c.Close()
			for i := range j.n {
				cid := fmt.Sprintf("%s-%06d", j.sender, i)
				ctx, cancel := context.WithTimeout(t.Context(), waitTime)
				ack, err := c.Send(ctx, j.to, client.Outgoing{Text: cid, ClientMsgID: cid})
				cancel()
				if err != nil {
					t.Errorf("%s: send %d: %v", j.sender, i, err)
					return
				}
				mu.Lock()
				sent[cid] = sentMsg{conv: j.conv, id: ack.GetId(), seq: ack.GetSeq()}
				want[j.conv]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	sendTime := time.Since(start)
	total := len(sent)
	t.Logf("sent %d messages in %d conversations from %d senders in %v (%.0f/s)",
		total, len(want), len(jobs), sendTime.Round(time.Millisecond), float64(total)/sendTime.Seconds())

	before := heapAfterGC()
	sampler := startHeapSampler(t, 50*time.Millisecond)
	start = time.Now()
	d := dialRawDevice(t, srv.Addr, srv.ClientTLS(), "rcv", srv.Token("rcv"), "phone")
	eventually(t, 60*time.Second, func() string { return fmt.Sprintf("the backlog: %d of %d", d.total.Load(), total) },
		func() bool { return d.total.Load() >= int64(total) })
	drainTime := time.Since(start)
	peak := sampler.Stop()
	d.waitFor(t, want, waitTime)

	var a audit
	for conv := range want {
		msgs := d.messages(conv)
		a.add(checkConv(t, "rcv/phone", conv, msgs, sent))
		checkSenderOrder(t, conv, msgs)
	}
	d.close()
	after := heapAfterGC()
	t.Logf("drained %d messages in %v (%.0f/s): %s", total, drainTime.Round(time.Millisecond), float64(total)/drainTime.Seconds(), a)
	t.Logf("heap in use (server and clients, one process): before %s, peak %s (%d samples every 50ms), after %s",
		mib(before), mib(peak), sampler.samples.Load(), mib(after))
	if !a.clean() || a.unacked != 0 {
		t.Errorf("audit: %s", a)
	}
	if peak > backlogHeapLimit {
		t.Errorf("heap peaked at %s, above %s", mib(peak), mib(backlogHeapLimit))
	}
}

// checkSenderOrder checks that each writer's messages in a conversation
// appear in the order it sent them (each writer sends one at a time, so its
// own order is fixed). ClientMsgIDs are "writer-index", and a writer's name
// starts with its user's.
func checkSenderOrder(t testing.TB, conv string, msgs []*qimpb.Message) {
	t.Helper()
	last := make(map[string]int)
	for _, m := range msgs {
		cid := m.GetClientMsgId()
		k := strings.LastIndexByte(cid, '-')
		sender := cid[:max(k, 0)]
		i, err := strconv.Atoi(cid[k+1:])
		if k < 0 || err != nil || !strings.HasPrefix(sender, m.GetFromUser()) {
			t.Errorf("%s: message %q from %s", conv, m.GetClientMsgId(), m.GetFromUser())
			continue
		}
		if prev, ok := last[sender]; ok && i <= prev {
			t.Errorf("%s: %s's message %d after its message %d", conv, sender, i, prev)
		}
		last[sender] = i
	}
}

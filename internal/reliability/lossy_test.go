package reliability_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/testserver"
	"github.com/qim-im/qim/internal/udprelay"
	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// TestLossyNetwork puts alice behind a relay that loses 5% of datagrams
// (30% of handshake datagrams), duplicates 2%, reorders 5% and delays each
// by 10ms ± 5ms, while bob is connected directly. They send each other 500
// messages at the same time, 10 writers a side: each arrives exactly once,
// in seq order, and each writer's messages in the order it sent them.
func TestLossyNetwork(t *testing.T) {
	const writers = 10
	perSide := 500
	if soak() {
		perSide = 5000
	}
	srv := testserver.Start(t, testserver.Options{})
	seed := time.Now().UnixNano()
	relay, err := udprelay.New(udprelay.Config{
		Target:        srv.Addr,
		Delay:         10 * time.Millisecond,
		Jitter:        5 * time.Millisecond,
		Loss:          0.05,
		Duplicate:     0.02,
		Reorder:       0.05,
		HandshakeLoss: 0.30,
		Seed:          seed,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay.Close() })
	t.Logf("relay seed %d", seed)

	aliceCfg := demoConfig(srv, "alice", "phone")
	aliceCfg.Addr = relay.Addr()
	start := time.Now()
	// A handshake through 30% loss can outlast quic-go's 5 s handshake
	// timeout (it did once in CI); an app dials again, and so does the
	// test, up to 3 times.
	var alice *client.Client
	for attempt := 1; alice == nil; attempt++ {
		c, err := client.Dial(ctxT(t), aliceCfg)
		switch {
		case err == nil:
			alice = c
			t.Cleanup(func() { c.Close() })
		case attempt == 3:
			t.Fatalf("dial alice through the relay, 3 attempts: %v", err)
		default:
			t.Logf("dial attempt %d: %v", attempt, err)
		}
	}
	t.Logf("alice connected through the relay in %v", time.Since(start).Round(time.Millisecond))
	bob := dial(t, demoConfig(srv, "bob", "phone"))
	conv := store.DirectConv("alice", "bob")

	var (
		mu   sync.Mutex
		sent = make(map[string]sentMsg) // guarded by mu
		own  = map[string]map[uint64]bool{"alice": {}, "bob": {}}
		wg   sync.WaitGroup
	)
	got := make(map[string][]*qimpb.Message)
	start = time.Now()
	for _, side := range []struct{ from, to *client.Client }{{alice, bob}, {bob, alice}} {
		for w := range writers {
			wg.Go(func() {
				for i := w; i < perSide; i += writers {
					cid := fmt.Sprintf("%s-%02d-%05d", side.from.User(), w, i)
					ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
					ack, err := side.from.Send(ctx, client.ToUser(side.to.User()), client.Outgoing{Text: cid, ClientMsgID: cid})
					cancel()
					if err != nil {
						t.Errorf("%s: %v", cid, err)
						return
					}
					mu.Lock()
					sent[cid] = sentMsg{conv: conv, id: ack.GetId(), seq: ack.GetSeq()}
					own[side.from.User()][ack.GetSeq()] = true
					mu.Unlock()
				}
			})
		}
		wg.Go(func() {
			msgs, err := collect(side.to, perSide, 60*time.Second)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			got[side.to.User()] = msgs
			mu.Unlock()
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	took := time.Since(start)
	quiet(t, alice)
	quiet(t, bob)
	var a audit
	for _, c := range []*client.Client{alice, bob} {
		msgs := got[c.User()]
		a.add(checkConvExcept(t, c.User()+"/phone", conv, msgs, sent, own[c.User()]))
		checkSenderOrder(t, conv, msgs)
	}
	t.Logf("%d messages each way in %v: %s", perSide, took.Round(time.Millisecond), a)

	// Handshakes through the relay: 10 more devices of alice connect at
	// once and send one message each.
	const devices = 10
	dials := make([]time.Duration, devices)
	acks := make([]*qimpb.MessageAck, devices)
	for i := range devices {
		wg.Go(func() {
			cfg := demoConfig(srv, "alice", fmt.Sprintf("tool%d", i))
			cfg.Addr, cfg.SendOnly = relay.Addr(), true
			start := time.Now()
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			c, err := client.Dial(ctx, cfg)
			if err != nil {
				t.Errorf("tool%d: %v", i, err)
				return
			}
			defer c.Close()
			dials[i] = time.Since(start)
			cid := fmt.Sprintf("tool-%d", i)
			if acks[i], err = c.Send(ctx, client.ToUser("bob"), client.Outgoing{Text: cid, ClientMsgID: cid}); err != nil {
				t.Errorf("%s: %v", cid, err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	last := got["bob"][len(got["bob"])-1].GetSeq()
	for _, m := range recv(t, bob, devices, waitTime) {
		if m.GetSeq() <= last || !strings.HasPrefix(m.GetClientMsgId(), "tool-") {
			t.Errorf("bob got seq %d %q after seq %d", m.GetSeq(), m.GetClientMsgId(), last)
		}
		last = m.GetSeq()
	}
	quiet(t, bob)
	slices.Sort(dials)
	t.Logf("%d handshakes through the relay at once: fastest %v, median %v, slowest %v", devices,
		dials[0].Round(time.Millisecond), percentile(dials, 50).Round(time.Millisecond), dials[devices-1].Round(time.Millisecond))

	st := relay.Stats()
	t.Logf("relay client->server: %+v", st.ClientToServer)
	t.Logf("relay server->client: %+v", st.ServerToClient)
	if !a.clean() || a.unacked != 0 {
		t.Errorf("audit: %s", a)
	}
}

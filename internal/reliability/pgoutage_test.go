package reliability_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/pgtest"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
)

// TestPostgresOutage loses the database under load, as a restart of
// PostgreSQL does: a proxy between qimd and PostgreSQL cuts every
// connection and refuses new ones for 2 s, then lets them through again.
// While alice sends to bob and into a group, retrying each message with
// its ClientMsgID until acknowledged, her sends during the outage are
// answered STORE_UNAVAILABLE within a bound; afterwards they succeed again
// on the same server (no restart), and bob's device, online throughout,
// receives every acknowledged message once, in order, with dense seqs.
func TestPostgresOutage(t *testing.T) {
	dbURL, proxy := pgtest.Via(t, pgtest.Database(t))
	srv := testserver.Start(t, testserver.Options{Postgres: dbURL})
	alice := dial(t, demoConfig(srv, "alice", "phone"))
	bob := dial(t, demoConfig(srv, "bob", "phone"))
	g, err := alice.CreateGroup(ctxT(t), "outage")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinGroup(ctxT(t), g.GetId()); err != nil {
		t.Fatal(err)
	}

	var (
		mu          sync.Mutex
		acked       = make(map[string]*qimpb.MessageAck) // by ClientMsgID
		unavailable int                                  // STORE_UNAVAILABLE answers
		otherErrs   []error
		slowest     time.Duration // longest answer to a failed send
	)
	stop := make(chan struct{})
	var sender sync.WaitGroup
	sender.Go(func() {
		for i := 0; ; i++ {
			to := client.ToUser("bob")
			if i%2 == 1 {
				to = client.ToGroup(g.GetId())
			}
			cid := fmt.Sprintf("m%d", i)
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				start := time.Now()
				ack, err := alice.Send(ctx, to, client.Outgoing{Text: cid, ClientMsgID: cid})
				cancel()
				mu.Lock()
				if err == nil {
					acked[cid] = ack
					mu.Unlock()
					break
				}
				slowest = max(slowest, time.Since(start))
				if codeOf(err) == qimpb.Code_STORE_UNAVAILABLE {
					unavailable++
				} else {
					otherErrs = append(otherErrs, err)
				}
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
		}
	})
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	eventually(t, 20*time.Second, func() string { return "acks before the outage" }, func() bool { return count() >= 50 })

	proxy.SetRefusing(true)
	proxy.Cut()
	outage := time.Now()
	eventually(t, 20*time.Second, func() string { return "STORE_UNAVAILABLE during the outage" }, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return unavailable > 0
	})
	time.Sleep(2*time.Second - time.Since(outage))
	before := count()
	proxy.SetRefusing(false)
	eventually(t, 30*time.Second, func() string { return "acks after the database came back" }, func() bool { return count() >= before+50 })
	close(stop)
	sender.Wait()

	mu.Lock()
	t.Logf("outage: %d acknowledged, %d STORE_UNAVAILABLE answers, slowest failed answer %v", len(acked), unavailable, slowest.Round(time.Millisecond))
	if len(otherErrs) > 0 {
		t.Errorf("%d sends failed with another error than STORE_UNAVAILABLE, first: %v", len(otherErrs), otherErrs[0])
	}
	if slowest > 12*time.Second {
		t.Errorf("a failed send took %v to be answered", slowest)
	}
	want := len(acked)
	mu.Unlock()

	// bob's device, online throughout, gets every acknowledged message,
	// once, in seq order per conversation, with the seq of its ack.
	got := recv(t, bob, want, 30*time.Second)
	quiet(t, bob)
	seen := make(map[string]bool)
	last := make(map[bool]uint64) // by "is a group message"
	for _, m := range got {
		cid := client.Text(m)
		ack := acked[cid]
		switch {
		case ack == nil:
			t.Errorf("bob got %q, never acknowledged", cid)
		case seen[cid]:
			t.Errorf("bob got %q twice", cid)
		case m.GetSeq() != ack.GetSeq() || m.GetId() != ack.GetId():
			t.Errorf("bob got %q as seq %d id %d, acknowledged as seq %d id %d", cid, m.GetSeq(), m.GetId(), ack.GetSeq(), ack.GetId())
		}
		seen[cid] = true
		isGroup := m.GetToGroup() != ""
		if m.GetSeq() != last[isGroup]+1 {
			t.Errorf("bob got %q with seq %d after %d (group %t): not dense", cid, m.GetSeq(), last[isGroup], isGroup)
		}
		last[isGroup] = m.GetSeq()
	}
	for _, c := range []*client.Client{alice, bob} {
		select {
		case <-c.Done():
			t.Errorf("%s's session ended during the outage: %v", c.User(), c.Err())
		default:
		}
	}
}

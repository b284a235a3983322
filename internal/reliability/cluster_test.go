package reliability_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/daemon"
	"github.com/qim-im/qim/internal/pgtest"
	qimpb "github.com/qim-im/qim/proto"
)

// TestClusterKill9 runs three qimd processes as a cluster (one PostgreSQL
// database, every qimd a member of one embedded NATS cluster), with
// senders and the devices of one receiver spread over them, and kills one
// node with SIGKILL under load. Every device given the three addresses
// fails over to the others. Afterwards, each of the receiver's devices,
// the one that was on the killed node included, has received every
// acknowledged message once, in order, and the store holds each message
// once.
func TestClusterKill9(t *testing.T) {
	const nodes, senders, perSender = 3, 6, 60
	db := pgtest.Database(t)
	bin := qimdBin.Path(t)

	// Each node's NATS cluster port, known before any starts: each node
	// routes to the others.
	natsPorts := make([]string, nodes)
	for i := range natsPorts {
		natsPorts[i] = freeTCPAddr(t)
	}
	ps := make([]*qimdProc, nodes)
	for i := range ps {
		ps[i] = newQimd(t, bin, t.TempDir(), freeUDPAddr(t))
		var routes []string
		for j, a := range natsPorts {
			if j != i {
				routes = append(routes, "nats://"+a)
			}
		}
		ps[i].args = []string{"--store", db, "--server-id", fmt.Sprint(i + 1), "--nats-embed",
			"--nats-cluster", natsPorts[i], "--nats-routes", strings.Join(routes, ","), "--catch-up-every", "5s"}
		if i > 0 {
			// The nodes share the first's certificates, keys and
			// application secrets.
			if err := daemon.CopyShared(ps[0].data, ps[i].data); err != nil {
				t.Fatal(err)
			}
		}
		ps[i].start()
	}
	addrs := make([]string, nodes)
	for i, p := range ps {
		addrs[i] = p.addr
	}
	// config returns the Config of a device whose first node is i, with
	// the others after it.
	config := func(user, token, device string, i int) client.Config {
		cfg := ps[i].config(user, token, device)
		cfg.Reconnect = true
		for k := 1; k < nodes; k++ {
			cfg.Addrs = append(cfg.Addrs, addrs[(i+k)%nodes])
		}
		return cfg
	}

	rcvToken := ps[0].token("rcv")
	rcv := make([]*client.Client, nodes)
	for i := range rcv {
		rcv[i] = dial(t, config("rcv", rcvToken, fmt.Sprintf("dev%d", i), i))
	}
	type sent struct {
		seq uint64
		cid string
	}
	acked := make([][]sent, senders)
	var retried, duplicates atomic.Int64
	var acks sync.WaitGroup
	ackedCount := make(chan struct{}, senders*perSender)
	for s := range senders {
		name := fmt.Sprintf("s%d", s)
		c := dial(t, config(name, ps[0].token(name), "phone", s%nodes))
		acks.Go(func() {
			for k := range perSender {
				// A send whose connection is lost fails (the message may
				// be stored or not); the device sends it again with the
				// same client_msg_id, which the store de-duplicates,
				// while the client fails over to another node.
				cid := client.NewClientMsgID()
				var ack *qimpb.MessageAck
				var err error
				for deadline := time.Now().Add(waitTime); time.Now().Before(deadline); {
					ctx, cancel := context.WithTimeout(context.Background(), waitTime)
					ack, err = c.Send(ctx, client.ToUser("rcv"), client.Outgoing{Text: fmt.Sprintf("%s %d", name, k), ClientMsgID: cid})
					cancel()
					if err == nil {
						if ack.Duplicate {
							duplicates.Add(1)
						}
						break
					}
					retried.Add(1)
					time.Sleep(100 * time.Millisecond)
				}
				if err != nil {
					t.Errorf("%s: send %d: %v", name, k, err)
					return
				}
				acked[s] = append(acked[s], sent{ack.Seq, cid})
				ackedCount <- struct{}{}
			}
		})
	}
	// Kill node 1 once a third of the messages are acknowledged.
	for range senders * perSender / 3 {
		<-ackedCount
	}
	killed := time.Now()
	ps[1].kill()
	t.Logf("node 1 killed")
	acks.Wait()
	t.Logf("every sender done %v after the kill; %d sends retried, %d answered duplicate", time.Since(killed).Round(time.Millisecond), retried.Load(), duplicates.Load())
	if t.Failed() {
		t.FailNow()
	}

	// Each receiving device: every sender's conversation, seqs dense from 1
	// (a message stored but never acknowledged, its ack lost in the kill,
	// is there too, once), every acknowledged seq among them.
	for i, c := range rcv {
		got, err := collectUntil(c, senders, perSender, waitTime)
		if err != nil {
			t.Fatalf("device %d (first on node %d, now on %s): %v", i, i, c.ServerAddr(), err)
		}
		for s := range senders {
			name := fmt.Sprintf("s%d", s)
			seqs := got[name]
			for k, seq := range seqs {
				if seq != uint64(k+1) {
					t.Fatalf("device %d: from %s received seqs %v, want 1, 2, 3, ... once each", i, name, seqs)
				}
			}
			for _, a := range acked[s] {
				if !slices.Contains(seqs, a.seq) {
					t.Fatalf("device %d: acknowledged seq %d from %s never arrived (received %v)", i, a.seq, name, seqs)
				}
			}
		}
		t.Logf("device %d: all of it, now on %s", i, c.ServerAddr())
	}

	// The store holds each message once.
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// Every message was sent with a client_msg_id, which the de-duplication
	// table holds once: a message stored twice would be a row of messages
	// without a row of its own there.
	var rows, ids int
	if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM qim.messages), (SELECT count(*) FROM qim.dedup)`).Scan(&rows, &ids); err != nil {
		t.Fatal(err)
	}
	t.Logf("store: %d messages, %d client_msg_ids", rows, ids)
	if rows != ids || rows < senders*perSender {
		t.Fatalf("the store holds %d messages for %d client_msg_ids, want %d or more, one each", rows, ids, senders*perSender)
	}
}

// collectUntil reads messages from c until it has n from each of the
// senders s0..s(senders-1), and returns their seqs by sender, in the order
// received. More may arrive (messages stored whose ack was lost).
func collectUntil(c *client.Client, senders, n int, timeout time.Duration) (map[string][]uint64, error) {
	got := make(map[string][]uint64)
	done := func() bool {
		for s := range senders {
			if len(got[fmt.Sprintf("s%d", s)]) < n {
				return false
			}
		}
		return true
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for !done() {
		select {
		case m, ok := <-c.Messages():
			if !ok {
				return got, fmt.Errorf("session ended: %v", c.Err())
			}
			got[m.FromUser] = append(got[m.FromUser], m.Seq)
		case <-deadline.C:
			return got, fmt.Errorf("after %v received %s", timeout, counts(got))
		}
	}
	// What is in flight still arrives (stored, ack lost).
	quietFor := time.NewTimer(500 * time.Millisecond)
	defer quietFor.Stop()
	for {
		select {
		case m, ok := <-c.Messages():
			if !ok {
				return got, nil
			}
			got[m.FromUser] = append(got[m.FromUser], m.Seq)
		case <-quietFor.C:
			return got, nil
		}
	}
}

func counts(got map[string][]uint64) string {
	var s []string
	for k, v := range got {
		s = append(s, fmt.Sprintf("%s:%d", k, len(v)))
	}
	slices.Sort(s)
	return fmt.Sprint(s)
}

// freeTCPAddr returns a 127.0.0.1 TCP address that was free a moment ago.
func freeTCPAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

package client_test

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/daemon"
	"github.com/qim-im/qim/internal/pgtest"
	"github.com/qim-im/qim/internal/testserver"
	"github.com/qim-im/qim/internal/udprelay"
	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// deadAttempt bounds, in these tests, an attempt to connect to a node that
// does not answer (QUIC's handshake timeout, 5 s by default).
const deadAttempt = 1500 * time.Millisecond

// quickQUIC returns the client's default QUIC configuration, but with a
// handshake timeout of deadAttempt and the given idle timeout and
// keepalive period.
func quickQUIC(idle, keepAlive time.Duration) *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout:  deadAttempt,
		MaxIdleTimeout:        idle,
		KeepAlivePeriod:       keepAlive,
		MaxIncomingStreams:    1000,
		MaxIncomingUniStreams: -1,
		EnableDatagrams:       true,
	}
}

// startCluster starts two nodes on one PostgreSQL store and one router.
func startCluster(t *testing.T) *testserver.Cluster {
	t.Helper()
	return testserver.StartCluster(t, 2, testserver.Options{Postgres: pgtest.Database(t)})
}

// failoverLog records what a client reports to Config.OnFailover.
type failoverLog struct {
	mu    sync.Mutex
	moves []string
}

func (l *failoverLog) record(from, to string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.moves = append(l.moves, from+" -> "+to)
}

func (l *failoverLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.moves)
}

// deadNode returns the address of a UDP socket that swallows everything
// sent to it, as a node whose machine is gone, and a func that reports
// whether anything arrived there.
func deadNode(t *testing.T) (addr string, heard func() bool) {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var got atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			got.Store(true)
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
	return pc.LocalAddr().String(), got.Load
}

// TestFailover sends a bounded stream of messages from alice, connected to
// node 1, to bob, whose tablet is connected to node 2 and whose phone to
// node 1. Node 1 stops mid-stream. alice and bob's phone move to node 2
// by themselves; every acknowledged message reaches both of bob's
// devices once, in order, with dense seqs, and is stored once.
func TestFailover(t *testing.T) {
	for _, tt := range []struct {
		name string
		// silent puts node 1 behind a relay that goes dark before the node
		// stops, as when its machine dies: the clients notice through
		// their idle timeout, and their attempt to reach node 1 again
		// fails before they move on. Otherwise they hear GOING_AWAY (the
		// server's Close sends it as the connection's close code, Shutdown
		// as a DISCONNECT) and move on at once.
		silent bool
		stop   func(*testserver.Server)
	}{
		{"Close", false, (*testserver.Server).Stop},
		{"Shutdown", false, (*testserver.Server).Shutdown},
		{"Crash", true, (*testserver.Server).Stop},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cl := startCluster(t)
			n1, n2 := cl.Nodes[0], cl.Nodes[1]
			addr1 := n1.Addr
			var relay *udprelay.Relay
			if tt.silent {
				var err error
				if relay, err = udprelay.New(udprelay.Config{Target: n1.Addr}); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { relay.Close() })
				addr1 = relay.Addr()
			}
			config := func(user, device string, nodes ...string) client.Config {
				cfg := cl.ClientConfig(user, device)
				cfg.Addr, cfg.Addrs = nodes[0], nodes[1:]
				cfg.Reconnect = true
				cfg.ReconnectMax = 200 * time.Millisecond
				cfg.QUICConfig = quickQUIC(time.Second, 200*time.Millisecond)
				return cfg
			}
			var aliceStates stateLog
			var aliceMoves, phoneMoves failoverLog
			cfg := config("alice", "laptop", addr1, n2.Addr)
			cfg.OnState, cfg.OnFailover = aliceStates.record, aliceMoves.record
			alice := dialConfig(t, cfg)
			cfg = config("bob", "phone", addr1, n2.Addr)
			cfg.OnFailover = phoneMoves.record
			phone := dialConfig(t, cfg)
			tablet := dialConfig(t, config("bob", "tablet", n2.Addr, addr1))
			for c, want := range map[*client.Client]string{alice: addr1, phone: addr1, tablet: n2.Addr} {
				if got := c.ServerAddr(); got != want {
					t.Fatalf("%s/%s on %s, want %s", c.User(), c.Device(), got, want)
				}
			}

			const total, stopAt = 60, 20
			var acked atomic.Int64
			acks := make([]*qimpb.MessageAck, total)
			ctx := ctxT(t)
			sent := async(func() error {
				for i := range total {
					ack, err := alice.Send(ctx, client.ToUser("bob"), client.Outgoing{Text: fmt.Sprint("m", i+1)})
					if err != nil {
						return fmt.Errorf("message %d: %w", i+1, err)
					}
					acks[i] = ack
					acked.Store(int64(i + 1))
				}
				return nil
			})
			eventually(t, "alice's first messages to be acknowledged", func() bool { return acked.Load() >= stopAt })
			if relay != nil {
				relay.Blackhole(true)
			}
			tt.stop(n1)
			if err := wait(t, sent); err != nil {
				t.Fatalf("sending across the failover: %v", err)
			}
			if n := acked.Load(); n <= stopAt {
				t.Fatalf("only %d messages sent: node 1 stopped after the stream", n)
			}

			for i, ack := range acks {
				if ack.GetSeq() != uint64(i+1) {
					t.Fatalf("message %d acknowledged with seq %d", i+1, ack.GetSeq())
				}
			}
			for _, dev := range []*client.Client{tablet, phone} {
				for i, m := range recv(t, dev, total) {
					if want := fmt.Sprint("m", i+1); client.Text(m) != want || m.GetSeq() != uint64(i+1) || m.GetFromUser() != "alice" {
						t.Fatalf("bob/%s: message %d is %q seq %d from %s, want %q seq %d from alice",
							dev.Device(), i, client.Text(m), m.GetSeq(), m.GetFromUser(), want, i+1)
					}
				}
				quiet(t, dev)
			}

			want := []string{addr1 + " -> " + n2.Addr}
			for name, got := range map[string][]string{"alice": aliceMoves.all(), "bob/phone": phoneMoves.all()} {
				if !slices.Equal(got, want) {
					t.Errorf("%s failed over %q, want %q", name, got, want)
				}
			}
			if got := alice.ServerAddr(); got != n2.Addr {
				t.Errorf("alice on %s after the failover, want %s", got, n2.Addr)
			}
			if !tt.silent && !alice.Used0RTT() {
				// (After a failed attempt, crypto/tls has dropped the ticket.)
				t.Errorf("alice did not resume in 0-RTT on node 2, which shares node 1's ticket key")
			}
			attempts := aliceStates.count(client.Reconnecting)
			if tt.silent && attempts < 2 || !tt.silent && attempts != 1 {
				// GOING_AWAY: straight to node 2; silent: node 1 first.
				t.Errorf("alice made %d attempts to reconnect (states %v)", attempts, &aliceStates)
			}

			stored := checkStored(t, cl.Store, "alice", "bob", total)

			// A message node 1 stored, sent again to node 2 with its
			// client_msg_id, is answered with the original: the store is
			// shared. (The retries of the stream above met this case in
			// most runs, when node 1 had stored the message in flight.)
			again, err := alice.Send(ctxT(t), client.ToUser("bob"), client.Outgoing{Text: "m1", ClientMsgID: stored[0].GetClientMsgId()})
			if err != nil || !again.GetDuplicate() || again.GetSeq() != 1 || again.GetId() != stored[0].GetId() {
				t.Fatalf("message 1 sent again to node 2: %v, %v; want the original, duplicate", again, err)
			}

			// The new node keeps the session when the network changes.
			migrateTo(t, alice, "127.0.0.2")
			send(t, alice, client.ToUser("bob"), "after migrating")
			if m := recv(t, tablet, 1)[0]; client.Text(m) != "after migrating" || m.GetSeq() != total+1 {
				t.Fatalf("bob/tablet got %q seq %d after alice migrated", client.Text(m), m.GetSeq())
			}
			if got := alice.ServerAddr(); got != n2.Addr || aliceStates.count(client.Reconnecting) != attempts {
				t.Fatalf("alice on %s, %d attempts to reconnect, after migrating", got, aliceStates.count(client.Reconnecting))
			}
		})
	}
}

// checkStored checks that the store holds the conversation of from and to
// as messages m1..m<n> from from, once each, with seqs 1..n, and returns
// them.
func checkStored(t *testing.T, st store.Store, from, to string, n int) []*qimpb.Message {
	t.Helper()
	app := store.AppID(daemon.DemoOrg, daemon.DemoAppkey)
	msgs, err := st.Messages(ctxT(t), app, store.DirectConv(from, to), 0, 10*n)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != n {
		t.Fatalf("the store holds %d messages, want %d", len(msgs), n)
	}
	ids := make(map[string]bool)
	for i, m := range msgs {
		if want := fmt.Sprint("m", i+1); client.Text(m) != want || m.GetSeq() != uint64(i+1) || m.GetFromUser() != from || ids[m.GetClientMsgId()] {
			t.Fatalf("stored message %d: %q seq %d from %s, client_msg_id %q (seen: %v)", i, client.Text(m), m.GetSeq(), m.GetFromUser(), m.GetClientMsgId(), ids[m.GetClientMsgId()])
		}
		ids[m.GetClientMsgId()] = true
	}
	return msgs
}

// TestDialNodes checks how Dial picks among the nodes of Config.Addr and
// Config.Addrs.
func TestDialNodes(t *testing.T) {
	srv := startServer(t)
	dead, _ := deadNode(t)

	t.Run("first dead", func(t *testing.T) {
		cfg := config(srv, "alice", "phone")
		cfg.Addr, cfg.Addrs = dead, []string{srv.Addr}
		cfg.QUICConfig = quickQUIC(0, 0)
		alice := dialConfig(t, cfg)
		if got := alice.ServerAddr(); got != srv.Addr {
			t.Fatalf("connected to %s, want %s", got, srv.Addr)
		}
		bob := dial(t, srv, "bob", "phone")
		send(t, alice, client.ToUser("bob"), "through the second address")
		if m := recv(t, bob, 1)[0]; client.Text(m) != "through the second address" {
			t.Fatalf("bob got %q", client.Text(m))
		}
	})

	t.Run("refusal is final", func(t *testing.T) {
		other, heard := deadNode(t)
		cfg := config(srv, "alice", "phone")
		cfg.Addrs = []string{other}
		cfg.Token = srv.Token("mallory")
		c, err := client.Dial(ctxT(t), cfg)
		if err == nil {
			c.Close()
			t.Fatal("Dial succeeded")
		}
		wantCode(t, err, qimpb.Code_UNAUTHENTICATED)
		time.Sleep(50 * time.Millisecond) // for a datagram in flight
		if heard() {
			t.Fatal("Dial tried the next node after UNAUTHENTICATED")
		}
	})

	t.Run("all dead", func(t *testing.T) {
		other, _ := deadNode(t)
		cfg := config(srv, "alice", "phone")
		cfg.Addr, cfg.Addrs = dead, []string{other}
		cfg.QUICConfig = quickQUIC(0, 0)
		c, err := client.Dial(ctxT(t), cfg)
		if err == nil {
			c.Close()
			t.Fatal("Dial succeeded")
		}
		var timeout net.Error
		if msg := err.Error(); !strings.Contains(msg, dead) || !strings.Contains(msg, other) || !errors.As(err, &timeout) || !timeout.Timeout() {
			t.Fatalf("Dial: %v; want both addresses and a timeout", err)
		}
	})

	t.Run("bad address", func(t *testing.T) {
		cfg := config(srv, "alice", "phone")
		cfg.Addrs = []string{"127.0.0.1"}
		if c, err := client.Dial(ctxT(t), cfg); err == nil || !strings.Contains(err.Error(), "missing port") {
			if c != nil {
				c.Close()
			}
			t.Fatalf("Dial with an address without a port: %v", err)
		}
	})
}

// TestFailoverAllNodesDown stops every node: the client keeps trying them,
// in turn and with backoff, and resumes when one comes back, with the
// message it sent meanwhile stored once.
func TestFailoverAllNodesDown(t *testing.T) {
	cl := startCluster(t)
	n1, n2 := cl.Nodes[0], cl.Nodes[1]
	var states stateLog
	cfg := cl.ClientConfig("alice", "phone")
	cfg.Reconnect = true
	cfg.ReconnectMin, cfg.ReconnectMax = 20*time.Millisecond, 200*time.Millisecond
	cfg.QUICConfig = quickQUIC(time.Second, 200*time.Millisecond)
	cfg.OnState = states.record
	alice := dialConfig(t, cfg)

	n1.Stop()
	n2.Stop()
	eventually(t, "alice to try each node more than once", func() bool { return states.count(client.Reconnecting) >= 3 })
	select {
	case <-alice.Done():
		t.Fatalf("session ended with every node down: %v", alice.Err())
	default:
	}
	ctx := ctxT(t)
	sent := async(func() error {
		_, err := alice.Send(ctx, client.ToUser("bob"), client.Outgoing{Text: "m1"})
		return err
	})

	n2.Restart()
	if err := wait(t, sent); err != nil {
		t.Fatalf("Send while every node was down: %v", err)
	}
	if got := alice.ServerAddr(); got != n2.Addr {
		t.Fatalf("alice on %s, want %s, the node that came back", got, n2.Addr)
	}
	bobCfg := cl.ClientConfig("bob", "phone")
	bobCfg.Addr, bobCfg.Addrs = n2.Addr, nil
	bob := dialConfig(t, bobCfg)
	if m := recv(t, bob, 1)[0]; client.Text(m) != "m1" {
		t.Fatalf("bob got %q", client.Text(m))
	}
	checkStored(t, cl.Store, "alice", "bob", 1)
}

package client_test

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/udprelay"
	qimpb "github.com/qim-im/qim/proto"
)

// stateLog records the states a client reports to Config.OnState.
type stateLog struct {
	mu     sync.Mutex
	states []client.State
}

func (l *stateLog) record(s client.State) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.states = append(l.states, s)
}

func (l *stateLog) count(s client.State) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, x := range l.states {
		if x == s {
			n++
		}
	}
	return n
}

func (l *stateLog) all() []client.State {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.states)
}

func (l *stateLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprint(l.states)
}

// collectRange receives the messages peer<first>..peer<last> of the
// conversation with peer, once each and in order.
func collectRange(t *testing.T, c *client.Client, peer string, first, last int) {
	t.Helper()
	var prev uint64
	for i, m := range recv(t, c, last-first+1) {
		if want := fmt.Sprintf("%s%d", peer, first+i); client.Text(m) != want || m.GetSeq() <= prev || m.GetFromUser() != peer {
			t.Fatalf("%s: message %d is %q seq %d (after seq %d), want %q", c.User(), i, client.Text(m), m.GetSeq(), prev, want)
		}
		prev = m.GetSeq()
	}
}

// sendRange sends peer<first>..peer<last> from c to the user to.
func sendRange(t *testing.T, c *client.Client, to string, first, last int) {
	t.Helper()
	for i := first; i <= last; i++ {
		send(t, c, client.ToUser(to), fmt.Sprint(c.User(), i))
	}
}

func TestResumeAfterOutage(t *testing.T) {
	srv := startServer(t)
	relay, err := udprelay.New(udprelay.Config{Target: srv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay.Close() })
	var states stateLog
	cfg := config(srv, "alice", "phone")
	cfg.Addr = relay.Addr()
	cfg.Reconnect = true
	cfg.IdleTimeout = time.Second
	cfg.KeepAlive = 300 * time.Millisecond
	cfg.ReconnectMax = 200 * time.Millisecond
	cfg.OnState = states.record
	alice := dialConfig(t, cfg)
	bob := dial(t, srv, "bob", "phone")
	sendRange(t, bob, "alice", 1, 3)
	collectRange(t, alice, "bob", 1, 3)

	// The network goes away for longer than the idle timeout. bob writes
	// meanwhile, and alice sends a message of her own.
	relay.Blackhole(true)
	ctx := ctxT(t)
	sent := async(func() error {
		_, err := alice.Send(ctx, client.ToUser("bob"), client.Outgoing{Text: "alice1"})
		return err
	})
	sendRange(t, bob, "alice", 4, 23)
	eventually(t, "alice to lose her connection", func() bool { return states.count(client.Disconnected) > 0 })
	select {
	case err := <-sent:
		t.Fatalf("Send during the outage returned %v", err)
	default:
	}
	time.Sleep(300 * time.Millisecond) // some reconnection attempts fail
	relay.Blackhole(false)

	// alice resumes by herself: everything arrives once, in order, and her
	// send completes, stored once.
	if err := wait(t, sent); err != nil {
		t.Fatalf("Send across the outage: %v", err)
	}
	collectRange(t, alice, "bob", 4, 23)
	collectRange(t, bob, "alice", 1, 1)
	quiet(t, alice)
	quiet(t, bob)
	if n := alice.Reconnects(); n < 1 || srv.Connects() != uint64(n)+2 {
		t.Fatalf("Reconnects = %d, server sessions %d", n, srv.Connects())
	}
	if !alice.Used0RTT() {
		t.Errorf("the reconnection did not use 0-RTT")
	}
	if states.count(client.Reconnecting) < 1 || states.count(client.Connected) != alice.Reconnects()+1 {
		t.Errorf("states %v after %d reconnections", &states, alice.Reconnects())
	}
	select {
	case <-alice.Done():
		t.Fatalf("session ended: %v", alice.Err())
	default:
	}
}

func TestServerRestartResume(t *testing.T) {
	srv := startServer(t)
	cfg := config(srv, "alice", "phone")
	cfg.Reconnect = true
	cfg.ReconnectMax = 200 * time.Millisecond
	alice := dialConfig(t, cfg)
	bob := dial(t, srv, "bob", "phone")
	sendRange(t, bob, "alice", 1, 3)
	collectRange(t, alice, "bob", 1, 3)

	// A send made while the server is down goes out with the reconnection
	// (in 0-RTT, which the restarted server rejects: then again).
	srv.Stop()
	ctx := ctxT(t)
	sent := async(func() error {
		_, err := alice.Send(ctx, client.ToUser("bob"), client.Outgoing{Text: "alice1"})
		return err
	})
	time.Sleep(100 * time.Millisecond)
	srv.Restart()
	if err := wait(t, sent); err != nil {
		t.Fatalf("Send across the restart: %v", err)
	}
	eventually(t, "alice to reconnect", func() bool { return alice.Reconnects() >= 1 })
	bob = dial(t, srv, "bob", "phone") // the old bob does not reconnect
	collectRange(t, bob, "alice", 1, 1)
	sendRange(t, bob, "alice", 4, 8)
	collectRange(t, alice, "bob", 4, 8)
	quiet(t, alice)
	quiet(t, bob)
	// A restarted server has new session ticket keys unless it keeps them:
	// 0-RTT is then rejected and CONNECT sent again in 1-RTT.
	t.Logf("reconnected to the restarted server with 0-RTT: %v", alice.Used0RTT())
}

func TestBackgroundForeground(t *testing.T) {
	srv := startServer(t)
	var states stateLog
	cfg := config(srv, "alice", "phone")
	cfg.OnState = states.record
	alice := dialConfig(t, cfg)
	bob := dial(t, srv, "bob", "phone")
	sendRange(t, bob, "alice", 1, 2)
	collectRange(t, alice, "bob", 1, 2)

	alice.Background()
	alice.Background() // idempotent
	eventually(t, "Disconnected", func() bool { return states.count(client.Disconnected) == 1 })
	select {
	case <-alice.Done():
		t.Fatalf("session ended in the background: %v", alice.Err())
	default:
	}
	ctx := ctxT(t)
	sent := async(func() error {
		_, err := alice.Send(ctx, client.ToUser("bob"), client.Outgoing{Text: "alice1"})
		return err
	})
	sendRange(t, bob, "alice", 3, 7)
	quiet(t, alice) // nothing arrives in the background, and no reconnection
	select {
	case err := <-sent:
		t.Fatalf("Send in the background returned %v", err)
	default:
	}
	if n := alice.Reconnects(); n != 0 {
		t.Fatalf("reconnected %d times in the background", n)
	}

	if err := alice.Foreground(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	collectRange(t, alice, "bob", 3, 7)
	if err := wait(t, sent); err != nil {
		t.Fatal(err)
	}
	collectRange(t, bob, "alice", 1, 1)
	quiet(t, alice)
	if n := alice.Reconnects(); n != 1 {
		t.Fatalf("Reconnects = %d", n)
	}
	if !alice.Used0RTT() {
		t.Errorf("Foreground did not use 0-RTT")
	}
	if err := alice.Foreground(ctxT(t)); err != nil { // already connected
		t.Fatal(err)
	}
	if want := []client.State{client.Connected, client.Disconnected, client.Reconnecting, client.Connected}; !slices.Equal(states.all(), want) {
		t.Fatalf("states %v, want %v", &states, want)
	}

	// Close in the background.
	alice.Background()
	start := time.Now()
	alice.Close()
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Close in the background took %v", d)
	}
	if err := alice.Err(); err != nil {
		t.Fatalf("Err = %v", err)
	}
	if _, ok := <-alice.Messages(); ok {
		t.Fatal("Messages not closed")
	}
	if err := alice.Foreground(ctxT(t)); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Foreground after Close: %v", err)
	}
}

func TestReconnectStopsOnClose(t *testing.T) {
	srv := startServer(t)
	cfg := config(srv, "alice", "phone")
	cfg.Reconnect = true
	cfg.ReconnectMin = 5 * time.Millisecond
	cfg.ReconnectMax = 20 * time.Millisecond
	var states stateLog
	cfg.OnState = states.record
	alice, err := client.Dial(ctxT(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop() // GOING_AWAY, then nothing answers
	eventually(t, "reconnection attempts", func() bool { return states.count(client.Reconnecting) >= 1 })
	start := time.Now()
	alice.Close()
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close while reconnecting took %v", d)
	}
	if err := alice.Err(); err != nil {
		t.Fatalf("Err = %v", err)
	}
	if _, err := alice.Contacts(ctxT(t)); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Contacts after Close: %v", err)
	}
}

func TestReconnectNotAfterReplaced(t *testing.T) {
	srv := startServer(t)
	cfg := config(srv, "alice", "phone")
	cfg.Reconnect = true
	first := dialConfig(t, cfg)
	second := dialConfig(t, cfg)
	select {
	case <-first.Done():
	case <-time.After(waitTime):
		t.Fatal("first session not ended")
	}
	wantCode(t, first.Err(), qimpb.Code_REPLACED)
	if n := first.Reconnects(); n != 0 {
		t.Fatalf("the replaced session reconnected %d times", n)
	}
	send(t, second, client.ToUser("bob"), "still here")
}

func TestFakeReconnectRetries(t *testing.T) {
	fs := startFake(t)
	cfg := fs.clientTLS()
	cfg.Reconnect = true
	cfg.ReconnectMin = time.Millisecond
	dialed := make(chan *client.Client, 1)
	go func() {
		c, err := client.Dial(ctxT(t), cfg)
		if err != nil {
			t.Error(err)
		}
		dialed <- c
	}()
	fc := fs.accept(t)
	fc.read(fc.ctlR)
	fc.respond(fc.ctl, 0, qimpb.Code_OK, &qimpb.Connected{User: "alice", Device: "phone", MaxFrame: qimpb.DefaultMaxFrame})
	c := <-dialed
	if c == nil {
		t.FailNow()
	}
	t.Cleanup(func() { c.Close() })

	var ack *qimpb.MessageAck
	sent := async(func() (err error) {
		ack, err = c.Send(ctxT(t), client.ToUser("bob"), client.Outgoing{Text: "x", ClientMsgID: "m-1"})
		return err
	})
	_, r := fc.acceptStream()
	fc.readRequest(r, new(qimpb.Message))
	created := async(func() error {
		_, err := c.CreateGroup(ctxT(t), "g")
		return err
	})
	_, r = fc.acceptStream()
	fc.readRequest(r, new(qimpb.GroupRequest))

	// The connection is lost with both requests unanswered.
	fc.qc.CloseWithError(quic.ApplicationErrorCode(qimpb.Code_GOING_AWAY), "restarting")
	if err := wait(t, created); !errors.Is(err, client.ErrStreamEnded) {
		t.Fatalf("CreateGroup across a lost connection: %v", err)
	}

	// The client reconnects and sends the message again, with its id.
	fc = fs.accept(t)
	cmd := fc.read(fc.ctlR)
	var cn qimpb.Connect
	if cmd.GetCommand() != qimpb.CommandType_CONNECT || proto.Unmarshal(cmd.GetPayload(), &cn) != nil ||
		cn.GetUser() != "alice" || cn.GetDevice() != "phone" || cn.GetToken() != "t" {
		t.Fatalf("first frame of the new connection: %v", cmd)
	}
	fc.respond(fc.ctl, 0, qimpb.Code_OK, &qimpb.Connected{User: "alice", Device: "phone", MaxFrame: qimpb.DefaultMaxFrame})
	s, r := fc.acceptStream()
	var m qimpb.Message
	req := fc.readRequest(r, &m)
	if m.GetClientMsgId() != "m-1" || m.GetToUser() != "bob" {
		t.Fatalf("resent message %v", &m)
	}
	fc.respond(s, req.GetRequestId(), qimpb.Code_OK, &qimpb.MessageAck{Id: 9, Seq: 1, Duplicate: true})
	if err := wait(t, sent); err != nil {
		t.Fatal(err)
	}
	if ack.GetId() != 9 {
		t.Fatalf("ack %v", ack)
	}
	// The resent request went out with CONNECT, and its answer may come
	// before the client counts the connection.
	eventually(t, "one reconnection", func() bool { return c.Reconnects() == 1 })
	done := async(c.Close)
	fc.read(fc.ctlR) // DISCONNECT
	fc.qc.CloseWithError(quic.ApplicationErrorCode(qimpb.Code_CLOSED), "bye")
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
}

package reliability_test

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"

	"github.com/quic-go/quic-go"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// TestDeadDeviceReconnects kills a receiving device while messages are
// pushed to it, with the last ones received but not acknowledged (the app
// was killed before it could): its UDP socket is closed, so no CONNECTION_CLOSE reaches
// the server, and the server's connection to it lives on, pushing into the
// void. The device then connects again with the same device id while the
// sender goes on. Read at the wire with that device (not a fresh one): each
// connection gets its messages once and in seq order, the second starts no
// later than just after the last message the first got (what was in flight
// and unacknowledged comes again, at most one push window of it), and after
// dropping by seq as PROTOCOL.md tells clients to, every message arrived
// exactly once, with its text.
func TestDeadDeviceReconnects(t *testing.T) {
	const n = 200
	srv := testserver.Start(t, testserver.Options{})
	alice := dial(t, demoConfig(srv, "alice", "phone"))
	conv := store.DirectConv("alice", "bob")

	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	dead, err := newRawDeviceOn(tr, srv.Addr, srv.ClientTLS(), "bob", srv.Token("bob"), "phone")
	if err != nil {
		t.Fatal(err)
	}

	var sent atomic.Int64
	sendErr := make(chan error, 1)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	go func() {
		for i := 1; i <= n; i++ {
			if _, err := alice.Send(ctx, client.ToUser("bob"), client.Outgoing{Text: fmt.Sprint("m", i)}); err != nil {
				sendErr <- fmt.Errorf("send %d: %w", i, err)
				return
			}
			sent.Add(1)
		}
		sendErr <- nil
	}()

	// Kill the device in the middle of the stream of pushes, with the
	// last 30 or more received but not acknowledged.
	eventually(t, waitTime, func() string { return fmt.Sprintf("bob to receive 40 messages (has %d)", dead.count(conv)) },
		func() bool { return dead.count(conv) >= 40 })
	dead.holdAcks.Store(true)
	acked := dead.count(conv)
	eventually(t, waitTime, func() string { return fmt.Sprintf("bob to receive 30 more (has %d)", dead.count(conv)) },
		func() bool { return dead.count(conv) >= acked+30 })
	udp.Close()
	tr.Close()
	dead.close()
	atDeath := sent.Load()
	first := dead.messages(conv)
	dead.checkProblems(t)

	// Let the sender go on while the device is away, unless it is done.
	eventually(t, waitTime, func() string { return "more messages sent while bob is away" },
		func() bool { return sent.Load() >= min(atDeath+20, n) })
	again := dialRawDevice(t, srv.Addr, srv.ClientTLS(), "bob", srv.Token("bob"), "phone")
	if err := <-sendErr; err != nil {
		t.Fatal(err)
	}
	lastSeq := func() uint64 {
		ms := again.messages(conv)
		if len(ms) == 0 {
			return 0
		}
		return ms[len(ms)-1].Seq
	}
	eventually(t, waitTime, func() string { return fmt.Sprintf("bob's reconnected device to reach seq %d (has %d)", n, lastSeq()) },
		func() bool { return lastSeq() >= n })
	again.waitFor(t, map[string]int{conv: 1}, waitTime) // and a moment for extra ones
	second := again.messages(conv)

	checkRun := func(name string, ms []*qimpb.Message, from uint64) {
		t.Helper()
		for i, m := range ms {
			if want := from + uint64(i); m.Seq != want {
				t.Fatalf("%s connection: message %d has seq %d, want %d (each once, in order)", name, i, m.Seq, want)
			}
			if want := fmt.Sprint("m", m.Seq); client.Text(m) != want || m.FromUser != "alice" {
				t.Fatalf("%s connection: seq %d is %q from %s, want %q from alice", name, m.Seq, client.Text(m), m.FromUser, want)
			}
		}
	}
	checkRun("first", first, 1)
	if len(second) == 0 {
		t.Fatal("the reconnected device got nothing")
	}
	checkRun("second", second, second[0].Seq)
	lastFirst := first[len(first)-1].Seq
	if second[0].Seq > lastFirst+1 {
		t.Fatalf("seqs %d to %d were lost: the first connection ended at %d, the second began at %d",
			lastFirst+1, second[0].Seq-1, lastFirst, second[0].Seq)
	}
	if got := second[len(second)-1].Seq; got != n {
		t.Fatalf("the second connection ended at seq %d, want %d", got, n)
	}
	redelivered := int64(lastFirst) - int64(second[0].Seq) + 1
	if redelivered < 30 {
		t.Errorf("%d messages delivered again, want at least the 30 unacknowledged ones", redelivered)
	}
	if redelivered > 64 {
		t.Errorf("%d messages delivered again, more than one push window (64)", redelivered)
	}
	t.Logf("killed after %d of %d sent, having received %d; after reconnecting it got seqs %d to %d (%d delivered again)",
		atDeath, n, len(first), second[0].Seq, n, max(redelivered, 0))
}

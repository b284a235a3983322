package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"testing"
	"time"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/testserver"
	"github.com/qim-im/qim/internal/udprelay"
)

// BenchmarkSwitch measures, per operation, the time from a network switch
// until the device is on its new network and has the next message, three
// ways side by side in one run:
//
//   - migrate: the live connection moves to a new local socket (QUIC
//     connection migration: one path probe, same session);
//   - reconnect-1rtt: the connection is replaced by a fresh one with a full
//     handshake, then CONNECT (what TCP-based servers do);
//   - resume-0rtt: a fresh connection with a session ticket, CONNECT in
//     0-RTT data.
//
// At the switch, bob sends alice a message. The figure runs from the switch
// to the later of: the message arriving at alice, and (migrate) the switch
// completing. For migrate the old network still works during the switch
// (make-before-break, as when a phone hands over from weakening Wi-Fi); the
// message may arrive on either path. Alice reaches the server directly
// (loopback) or through a relay adding 25 ms each way (50 ms RTT); with the
// relay the figure is also given in RTTs. Between operations the benchmark
// waits, untimed, for the server to leave the previous path: real switches
// are seconds apart, and the client waits for that before moving again.
func BenchmarkSwitch(b *testing.B) {
	for _, net := range []struct {
		name  string
		delay time.Duration
	}{
		{"loopback", 0},
		{"rtt50ms", 25 * time.Millisecond},
	} {
		for _, mode := range []string{"migrate", "reconnect-1rtt", "resume-0rtt"} {
			b.Run(net.name+"/"+mode, func(b *testing.B) { benchSwitch(b, net.delay, mode) })
		}
	}
}

func benchSwitch(b *testing.B, delay time.Duration, mode string) {
	srv := testserver.Start(b, testserver.Options{})
	addr := srv.Addr
	if delay > 0 {
		relay, err := udprelay.New(udprelay.Config{Target: srv.Addr, Delay: delay})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { relay.Close() })
		addr = relay.Addr()
	}
	cache := tls.NewLRUClientSessionCache(4)
	dialAlice := func(tickets tls.ClientSessionCache) *client.Client {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := client.Dial(ctx, client.Config{
			Addr: addr, TLSConfig: srv.ClientTLS(), Org: "demo", Appkey: "demo",
			User: "alice", Token: srv.Token("alice"), Device: "phone", LocalAddr: "127.0.0.2",
			SessionCache: tickets,
		})
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	bob := dialVia(b, srv, srv.Addr, "bob", nil)
	alice := dialAlice(cache)
	defer func() { alice.Close() }()
	ctx := context.Background()
	// Warm up: a first message each way, so that streams exist.
	if _, err := bob.Send(ctx, client.ToUser("alice"), client.Outgoing{Text: "warm"}); err != nil {
		b.Fatal(err)
	}
	<-alice.Messages()

	var total time.Duration
	b.ResetTimer()
	for i := range b.N {
		text := fmt.Sprint("m", i)
		b.StopTimer()
		if mode != "migrate" {
			alice.Close()
		}
		b.StartTimer()
		start := time.Now()
		sent := make(chan error, 1)
		go func() {
			_, err := bob.Send(ctx, client.ToUser("alice"), client.Outgoing{Text: text})
			sent <- err
		}()
		migrated := make(chan error, 1)
		switch mode {
		case "migrate":
			local := []string{"127.0.0.3", "127.0.0.2"}[i%2]
			go func() { migrated <- alice.Migrate(ctx, local) }()
		case "reconnect-1rtt":
			alice = dialAlice(tls.NewLRUClientSessionCache(1)) // no ticket: full handshake
		case "resume-0rtt":
			alice = dialAlice(cache)
		}
		for m := range alice.Messages() {
			if client.Text(m) == text {
				break
			}
		}
		if mode == "migrate" {
			if err := <-migrated; err != nil {
				b.Fatal(err)
			}
		}
		total += time.Since(start)
		b.StopTimer()
		if mode == "migrate" {
			time.Sleep(4*delay + 50*time.Millisecond)
		}
		if err := <-sent; err != nil {
			b.Fatal(err)
		}
		if mode == "resume-0rtt" && !alice.Used0RTT() {
			b.Fatal("resume did not use 0-RTT")
		}
		b.StartTimer()
	}
	b.StopTimer()
	ms := float64(total.Microseconds()) / 1000 / float64(b.N)
	b.ReportMetric(ms, "ms/switch")
	if delay > 0 {
		b.ReportMetric(ms/float64((2*delay).Milliseconds()), "RTTs/switch")
	}
}

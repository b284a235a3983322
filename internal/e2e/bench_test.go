package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/testserver"
	"github.com/qim-im/qim/internal/udprelay"
)

// BenchmarkSwitch measures, per operation, the time from a network switch
// until the device has the next message, for each way of switching side by
// side in one run:
//
//   - migrate-prepared: the live connection moves to a socket on the new
//     network whose path PrepareMigration probed before the switch, while
//     both networks worked (QUIC connection migration, same session, no
//     round trip at the switch);
//   - migrate-cold: the same without preparation: Migrate probes the new
//     path first (one round trip);
//   - reconnect-1rtt: a fresh connection with a full handshake, then
//     CONNECT (what TCP-based IM servers do);
//   - resume-0rtt: a fresh connection with a session ticket, CONNECT in
//     0-RTT data.
//
// Alice switches between two networks, 127.0.0.2 and 127.0.0.3 (see
// udprelay.Links); bob, on a direct connection, sends her the message. Two
// scenarios:
//
//   - cut (break-before-make): alice's network goes down; bob sends, and the
//     server stores the message (bob has its acknowledgement) and pushes it
//     into the dead network; then the switch starts. The clock stops when
//     the message reaches alice. Every way must reach the server over the
//     new network, and none pays for storing the message.
//   - handover (make-before-break): the old network still works. At the
//     switch bob sends; the clock stops at the later of the message's
//     arrival and the end of the switch (Migrate returning, or the new
//     connection's CONNECT answered). none is the same without a switch:
//     the latency of a message, which no way of switching can beat.
//
// Alice reaches the server directly (loopback) or through a relay adding
// 25 ms each way (50 ms RTT); with the relay the figure is also given in
// RTTs. Between operations the benchmark waits, untimed, for the server to
// leave the previous path: real switches are seconds apart, and Migrate
// waits for that before moving again.
func BenchmarkSwitch(b *testing.B) {
	for _, net := range []struct {
		name  string
		delay time.Duration
	}{
		{"loopback", 0},
		{"rtt50ms", 25 * time.Millisecond},
	} {
		for _, sc := range []struct {
			name  string
			cut   bool
			modes []string
		}{
			{"cut", true, []string{"migrate-prepared", "migrate-cold", "reconnect-1rtt", "resume-0rtt"}},
			{"handover", false, []string{"none", "migrate-prepared", "migrate-cold", "reconnect-1rtt", "resume-0rtt"}},
		} {
			for _, mode := range sc.modes {
				b.Run(net.name+"/"+sc.name+"/"+mode, func(b *testing.B) { benchSwitch(b, net.delay, sc.cut, mode) })
			}
		}
	}
}

// networks are alice's two networks.
var networks = [2]netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")}

func benchSwitch(b *testing.B, delay time.Duration, cut bool, mode string) {
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
	var links udprelay.Links
	ctx := context.Background()
	cache := tls.NewLRUClientSessionCache(4)
	dialAlice := func(network netip.Addr, tickets tls.ClientSessionCache) *client.Client {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		cfg := srv.ClientConfig("alice", "phone")
		cfg.Addr, cfg.LocalAddr, cfg.ListenPacket = addr, network.String(), links.ListenPacket
		cfg.SessionCache = tickets
		c, err := client.Dial(ctx, cfg)
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	bob := dialVia(b, srv, srv.Addr, "bob", nil)
	alice := dialAlice(networks[0], cache)
	defer func() { alice.Close() }()
	// Warm up: a first message, so that the conversation's streams exist.
	if _, err := bob.Send(ctx, client.ToUser("alice"), client.Outgoing{Text: "warm"}); err != nil {
		b.Fatal(err)
	}
	<-alice.Messages()
	connects := srv.Connects()

	times := make([]time.Duration, 0, b.N)
	for i := range b.N {
		from, to := networks[i%2], networks[(i+1)%2]
		text := fmt.Sprint("m", i)
		send := func() error {
			_, err := bob.Send(ctx, client.ToUser("alice"), client.Outgoing{Text: text})
			return err
		}
		switch {
		case mode == "migrate-prepared":
			if err := alice.PrepareMigration(ctx, to.String()); err != nil {
				b.Fatal(err)
			}
		case !cut && mode != "none" && mode != "migrate-cold":
			alice.Close() // a reconnecting client leaves its old connection first
		}
		if cut {
			links.SetDown(from, true)
			if err := send(); err != nil {
				b.Fatal(err)
			}
		}

		// The same quiet moment before every switch, whatever was set up:
		// a loop without one would run warmer than the others.
		time.Sleep(10 * time.Millisecond)
		start := time.Now()
		sent := make(chan error, 1)
		if !cut {
			go func() { sent <- send() }()
		}
		old, switched := alice, make(chan error, 1)
		switch mode {
		case "none":
			switched <- nil
		case "migrate-prepared", "migrate-cold":
			go func() { switched <- alice.Migrate(ctx, to.String()) }()
		case "reconnect-1rtt":
			alice = dialAlice(to, tls.NewLRUClientSessionCache(1)) // no ticket: full handshake
			switched <- nil
		case "resume-0rtt":
			alice = dialAlice(to, cache)
			switched <- nil
		}
		for m := range alice.Messages() {
			if client.Text(m) == text {
				break
			}
		}
		if err := <-switched; err != nil {
			b.Fatal(err)
		}
		times = append(times, time.Since(start))

		if !cut {
			if err := <-sent; err != nil {
				b.Fatal(err)
			}
		}
		links.SetDown(from, false)
		if old != alice {
			old.Close() // in a cut, the server has replaced its connection
		}
		if mode == "resume-0rtt" && !alice.Used0RTT() {
			b.Fatal("resume did not use 0-RTT")
		}
		if mode != "reconnect-1rtt" && mode != "resume-0rtt" && srv.Connects() != connects {
			b.Fatalf("%s made a new CONNECT", mode)
		}
		if mode == "migrate-cold" {
			// Let the server leave the previous path (it stops sending
			// there about two round trips after the switch began), so that
			// the next Migrate does not wait for it inside the timed part.
			// PrepareMigration waits for it untimed.
			time.Sleep(8*delay + 50*time.Millisecond)
		}
	}
	reportSwitches(b, times, 2*delay)
}

// reportSwitches reports the mean of times as ns/op (without the untimed
// set-up between them), their median as ms/switch and, with an emulated
// round-trip time, as RTTs/switch, and their 90th percentile as p90-ms.
func reportSwitches(b *testing.B, times []time.Duration, rtt time.Duration) {
	var total time.Duration
	for _, d := range times {
		total += d
	}
	slices.Sort(times)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	median := ms(times[len(times)/2])
	b.ReportMetric(float64(total.Nanoseconds())/float64(len(times)), "ns/op")
	b.ReportMetric(median, "ms/switch")
	b.ReportMetric(ms(times[len(times)*9/10]), "p90-ms")
	if rtt > 0 {
		b.ReportMetric(median/ms(rtt), "RTTs/switch")
	}
}

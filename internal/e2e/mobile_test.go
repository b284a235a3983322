package e2e

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/netlab"
	"github.com/qim-im/qim/internal/testserver"
	"github.com/qim-im/qim/internal/udprelay"
)

// Ten migrations in a row while messages flow both ways are tested in
// client.TestMigrateTenTimes, with the same checks.

// TestNATRebinding sends alice through a relay that changes its outbound
// port mid-flow, as a NAT that drops and re-creates its mapping: alice does
// not know, and the server keeps the session and pushes to the new address.
func TestNATRebinding(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	relay, err := udprelay.New(udprelay.Config{Target: srv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	// After a rebinding the server learns alice's new address from her
	// next packet; a phone's keepalive (25 s) would bring it eventually,
	// a short one keeps the test short.
	alice := dialVia(t, srv, relay.Addr(), "alice", func(c *client.Config) { c.KeepAlive = 100 * time.Millisecond })
	bob := dialVia(t, srv, srv.Addr, "bob", nil)
	chatFlow(t, alice, bob, 200, 2*time.Millisecond, func() {
		for range 5 {
			time.Sleep(60 * time.Millisecond)
			if err := relay.Rebind(); err != nil {
				t.Errorf("rebind: %v", err)
			}
		}
	})
	if n := srv.Connects(); n != 2 {
		t.Fatalf("server opened %d sessions, want 2 (no reconnect)", n)
	}
}

// TestOutageResume cuts alice off for longer than her idle timeout while
// bob keeps writing. Her connection dies; the client reconnects by itself
// (in 0-RTT, with the ticket of the first connection) and receives
// everything once, in order.
func TestOutageResume(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	relay, err := udprelay.New(udprelay.Config{Target: srv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	alice := dialVia(t, srv, relay.Addr(), "alice", func(c *client.Config) {
		c.Reconnect = true
		c.IdleTimeout = 500 * time.Millisecond
		c.KeepAlive = 150 * time.Millisecond
		c.ReconnectMin = 20 * time.Millisecond
		c.ReconnectMax = 200 * time.Millisecond
	})
	bob := dialVia(t, srv, srv.Addr, "bob", nil)
	chatFlow(t, alice, bob, 100, 5*time.Millisecond, func() {
		time.Sleep(100 * time.Millisecond)
		relay.Blackhole(true)
		time.Sleep(1500 * time.Millisecond) // three idle timeouts
		relay.Blackhole(false)
	})
	if alice.Reconnects() < 1 {
		t.Fatalf("alice reconnected %d times, want at least 1", alice.Reconnects())
	}
	if !alice.Used0RTT() {
		t.Errorf("the resumed connection did not use 0-RTT")
	}
}

// TestWifiToCellular runs over real interfaces: the phone and the server
// are in two network namespaces joined by a "wifi" and a "cellular" veth
// link. Mid-conversation the wifi link goes down and the phone moves its
// connection to cellular, keeping its session.
func TestWifiToCellular(t *testing.T) {
	lab := netlab.New(t)
	srv := testserver.Start(t, testserver.Options{
		ListenPacket: func() (net.PacketConn, error) { return lab.ListenUDP(lab.Server, netlab.ServerIP+":0") },
	})
	listenPhone := func(network, addr string) (net.PacketConn, error) { return lab.ListenUDP(lab.Phone, addr) }
	alice := dialVia(t, srv, srv.Addr, "alice", func(c *client.Config) {
		c.LocalAddr = netlab.PhoneWifiIP + ":0"
		c.ListenPacket = listenPhone
	})
	// Bob is on the server's side of the lab (same namespace as the server).
	bob := dialVia(t, srv, srv.Addr, "bob", func(c *client.Config) {
		c.ListenPacket = func(network, addr string) (net.PacketConn, error) {
			return lab.ListenUDP(lab.Server, netlab.ServerIP+":0")
		}
	})
	chatFlow(t, alice, bob, 150, 3*time.Millisecond, func() {
		time.Sleep(150 * time.Millisecond)
		lab.SetLink(lab.WifiLink, false)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := alice.Migrate(ctx, netlab.PhoneCellIP+":0"); err != nil {
			t.Errorf("move to cellular: %v", err)
		}
	})
	if n := srv.Connects(); n != 2 {
		t.Fatalf("server opened %d sessions, want 2 (no reconnect)", n)
	}
}

// TestNetworkCut cuts alice's network mid-conversation, as when a phone
// walks out of Wi-Fi, and moves her connection to her other network: one
// prepared while both worked (no round trip at the switch), or probed
// only after the cut. Nothing is lost or doubled, and the session stays.
func TestNetworkCut(t *testing.T) {
	wifi, cell := netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")
	for _, tt := range []struct {
		name     string
		prepared bool
	}{
		{"prepared", true},
		{"cold", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := testserver.Start(t, testserver.Options{})
			var links udprelay.Links
			alice := dialVia(t, srv, srv.Addr, "alice", func(c *client.Config) {
				c.LocalAddr, c.ListenPacket = wifi.String(), links.ListenPacket
			})
			bob := dialVia(t, srv, srv.Addr, "bob", nil)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if tt.prepared {
				if err := alice.PrepareMigration(ctx, cell.String()); err != nil {
					t.Fatal(err)
				}
			}
			chatFlow(t, alice, bob, 150, 2*time.Millisecond, func() {
				time.Sleep(100 * time.Millisecond)
				links.SetDown(wifi, true)
				if err := alice.Migrate(ctx, cell.String()); err != nil {
					t.Errorf("move to cellular: %v", err)
				}
			})
			if n := srv.Connects(); n != 2 || alice.Reconnects() != 0 {
				t.Fatalf("server opened %d sessions, want 2; alice reconnected %d times", n, alice.Reconnects())
			}
		})
	}
}

// TestWifiDiesWhileIdle is the break-before-make case: the phone is idle
// when its wifi link goes down, moves to cellular, and must get the next
// message at once, not after its next keepalive (25 s): the server moves to
// the new path only when the phone sends on it.
func TestWifiDiesWhileIdle(t *testing.T) {
	lab := netlab.New(t)
	srv := testserver.Start(t, testserver.Options{
		ListenPacket: func() (net.PacketConn, error) { return lab.ListenUDP(lab.Server, netlab.ServerIP+":0") },
	})
	alice := dialVia(t, srv, srv.Addr, "alice", func(c *client.Config) {
		c.LocalAddr = netlab.PhoneWifiIP + ":0"
		c.ListenPacket = func(network, addr string) (net.PacketConn, error) { return lab.ListenUDP(lab.Phone, addr) }
	})
	bob := dialVia(t, srv, srv.Addr, "bob", func(c *client.Config) {
		c.ListenPacket = func(network, addr string) (net.PacketConn, error) {
			return lab.ListenUDP(lab.Server, netlab.ServerIP+":0")
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := bob.Send(ctx, client.ToUser("alice"), client.Outgoing{Text: "on wifi"}); err != nil {
		t.Fatal(err)
	}
	<-alice.Messages()
	time.Sleep(100 * time.Millisecond) // idle: everything acknowledged

	lab.SetLink(lab.WifiLink, false)
	if err := alice.Migrate(ctx, netlab.PhoneCellIP+":0"); err != nil {
		t.Fatalf("move to cellular: %v", err)
	}
	start := time.Now()
	if _, err := bob.Send(ctx, client.ToUser("alice"), client.Outgoing{Text: "on cellular"}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-alice.Messages():
		if client.Text(m) != "on cellular" {
			t.Fatalf("got %q", client.Text(m))
		}
		t.Logf("delivered %v after the switch", time.Since(start))
	case <-time.After(5 * time.Second):
		t.Fatal("no message on cellular within 5 s of the switch")
	}
	if n := srv.Connects(); n != 2 {
		t.Fatalf("server opened %d sessions, want 2 (no reconnect)", n)
	}
}

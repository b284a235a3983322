package cluster

import (
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/qim-im/qim/core"
	"github.com/qim-im/qim/core/routertest"
	qimpb "github.com/qim-im/qim/proto"
)

func event(text string) core.Event {
	return core.Event{Msg: &qimpb.Message{FromUser: "alice", ToUser: "bob", Payload: []byte(text)}, Conv: "u:alice:bob"}
}

// TestRegisterThenDeliver: an event delivered from another node right
// after Register returns reaches the session, whichever servers the two
// nodes are on (the barrier of Register; without it, the other node's
// server may not have the subscription yet).
func TestRegisterThenDeliver(t *testing.T) {
	rs := openNodes(t, startCluster(t, 3), RouterConfig{})
	const users = 150
	rcv := make([]*routertest.Receiver, users)
	for i := range users {
		rcv[i] = new(routertest.Receiver)
		user := fmt.Sprintf("u%d", i)
		t.Cleanup(rs[i%3].Register("app", user, rcv[i]))
		rs[(i+1)%3].Deliver("app", []string{user}, event(user))
	}
	for i, r := range rcv {
		eventually(t, fmt.Sprintf("u%d receives its event", i), func() bool { return len(r.Events()) == 1 })
	}
}

// TestSubscriptionsRefCounted: the sessions of a user on a node share one
// NATS subscription, removed with the last of them.
func TestSubscriptionsRefCounted(t *testing.T) {
	servers := startCluster(t, 1)
	r := openNodes(t, servers, RouterConfig{})[0]
	connBase, serverBase := r.nc.NumSubscriptions(), servers[0].NATS().NumSubscriptions()
	check := func(what string, want int) {
		t.Helper()
		if got := r.nc.NumSubscriptions() - connBase; got != want {
			t.Fatalf("%s: the connection has %d user subscriptions, want %d", what, got, want)
		}
		if got := r.Stats().Subscriptions; got != int64(want) {
			t.Fatalf("%s: Stats().Subscriptions = %d, want %d", what, got, want)
		}
		eventually(t, fmt.Sprintf("%s: the server has %d user subscriptions", what, want), func() bool {
			return servers[0].NATS().NumSubscriptions()-serverBase == uint32(want)
		})
	}
	phone := r.Register("app", "bob", new(routertest.Receiver))
	laptop := r.Register("app", "bob", new(routertest.Receiver))
	check("two sessions of bob", 1)
	alice := r.Register("app", "alice", new(routertest.Receiver))
	other := r.Register("app2", "bob", new(routertest.Receiver))
	check("and alice, and bob of another app", 3)
	phone()
	phone()
	check("one session of bob left", 3)
	laptop()
	alice()
	other()
	check("none left", 0)
	again := r.Register("app", "bob", new(routertest.Receiver))
	check("bob again", 1)
	again()
	check("none again", 0)
}

// TestNoGoroutinePerSubscription: subscriptions share one channel and one
// goroutine.
func TestNoGoroutinePerSubscription(t *testing.T) {
	r := openNodes(t, startCluster(t, 1), RouterConfig{})[0]
	before := runtime.NumGoroutine()
	for i := range 1000 {
		t.Cleanup(r.Register("app", fmt.Sprintf("u%d", i), new(routertest.Receiver)))
	}
	if got := r.Stats().Subscriptions; got != 1000 {
		t.Fatalf("%d subscriptions, want 1000", got)
	}
	if after := runtime.NumGoroutine(); after-before > 20 {
		t.Errorf("1000 subscriptions took %d goroutines more", after-before)
	}
}

// TestFrameStaysLocal: this node's sessions get the event as delivered,
// Frame included; another node's get it without Frame.
func TestFrameStaysLocal(t *testing.T) {
	rs := openNodes(t, startCluster(t, 2), RouterConfig{})
	local, remote := new(routertest.Receiver), new(routertest.Receiver)
	t.Cleanup(rs[0].Register("app", "bob", local))
	t.Cleanup(rs[1].Register("app", "bob", remote))
	ev := event("hi")
	ev.Frame = new(core.PushFrame)
	rs[0].Deliver("app", []string{"bob"}, ev)
	eventually(t, "both sessions receive the event", func() bool {
		return len(local.Events()) == 1 && len(remote.Events()) == 1
	})
	if local.Events()[0].Frame != ev.Frame {
		t.Errorf("the local session got Frame %p, want %p", local.Events()[0].Frame, ev.Frame)
	}
	if remote.Events()[0].Frame != nil {
		t.Errorf("the remote session got a Frame")
	}
}

// TestMissedAfterServerShutdown: when the NATS server a node is connected
// to stops, the node reconnects to another server of the cluster, and
// both its listeners and the other nodes' are told they may have missed
// events; routing works again. The node finds the other servers either in
// its URL list or from the server it first connected to (gossip).
func TestMissedAfterServerShutdown(t *testing.T) {
	for _, tt := range []struct {
		name string
		url  func(servers []*Server) string
	}{
		{"AllURLs", func(servers []*Server) string {
			var urls []string
			for _, s := range servers {
				urls = append(urls, s.ClientURL())
			}
			return strings.Join(urls, ",")
		}},
		{"OneURLAndGossip", func(servers []*Server) string { return servers[0].ClientURL() }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			servers := startCluster(t, 3)
			a := openRouter(t, RouterConfig{URL: tt.url(servers), Name: "a"})
			var aServer *Server
			eventually(t, "a connects", func() bool {
				for _, s := range servers {
					if a.nc.ConnectedUrl() == s.ClientURL() {
						aServer = s
					}
				}
				return aServer != nil
			})
			var bServer *Server
			for _, s := range servers {
				if s != aServer {
					bServer = s
					break
				}
			}
			b := openRouter(t, RouterConfig{URL: bServer.ClientURL(), Name: "b"})
			waitPeers(t, a, b)
			la, lb := new(routertest.Listener), new(routertest.Listener)
			t.Cleanup(a.Listen(la))
			t.Cleanup(b.Listen(lb))
			bob := new(routertest.Receiver)
			t.Cleanup(a.Register("app", "bob", bob))
			if tt.name == "OneURLAndGossip" {
				eventually(t, "a learns the other servers", func() bool { return len(a.nc.DiscoveredServers()) == 2 })
			}

			aServer.Shutdown()
			eventually(t, "a's listener is told", func() bool { return la.MissedCount() > 0 })
			eventually(t, "b's listener is told", func() bool { return lb.MissedCount() > 0 })
			if a.nc.ConnectedUrl() == aServer.ClientURL() || !a.nc.IsConnected() {
				t.Fatalf("a is connected to %q", a.nc.ConnectedUrl())
			}
			if got := a.Stats().Reconnects; got != 1 {
				t.Errorf("a reconnected %d times", got)
			}
			if got := b.Stats().MissedReceived; got == 0 {
				t.Errorf("b received no missed report")
			}
			b.Deliver("app", []string{"bob"}, event("after"))
			eventually(t, "bob receives what b delivers", func() bool { return len(bob.Events()) == 1 })
		})
	}
}

// slowReceiver takes its time over each event, as a session that blocks
// would (which a session must not).
type slowReceiver struct{ routertest.Receiver }

func (r *slowReceiver) Receive(ev core.Event) {
	time.Sleep(2 * time.Millisecond)
	r.Receiver.Receive(ev)
}

// TestMissedOnInboundOverflow: when a node's inbound channel overflows,
// its listeners are told, and only its.
func TestMissedOnInboundOverflow(t *testing.T) {
	servers := startCluster(t, 2)
	a := openRouter(t, RouterConfig{URL: servers[0].ClientURL(), Name: "a"})
	b := openRouter(t, RouterConfig{URL: servers[1].ClientURL(), Name: "b", InboundMessages: 1})
	waitPeers(t, a, b)
	la, lb := new(routertest.Listener), new(routertest.Listener)
	t.Cleanup(a.Listen(la))
	t.Cleanup(b.Listen(lb))
	bob := new(slowReceiver)
	t.Cleanup(b.Register("app", "bob", bob))
	for i := range 200 {
		a.Deliver("app", []string{"bob"}, event(strconv.Itoa(i)))
	}
	eventually(t, "b's listener is told", func() bool { return lb.MissedCount() > 0 })
	if got := b.Stats().DroppedIn; got == 0 {
		t.Errorf("b counted no inbound overflow")
	}
	time.Sleep(routertest.Quiet)
	if n := len(bob.Events()); n >= 200 {
		t.Errorf("bob received all %d events", n)
	}
	if got := la.MissedCount(); got != 0 {
		t.Errorf("a's listener was told %d times", got)
	}
}

// TestMissedReportedByOtherNode: when a node drops events it should have
// published (its outgoing queue full), the other nodes' listeners are
// told; its own, whose sessions got the events, are not.
func TestMissedReportedByOtherNode(t *testing.T) {
	servers := startCluster(t, 2)
	a := openRouter(t, RouterConfig{URL: servers[0].ClientURL(), Name: "a", OutboundBytes: 1})
	b := openRouter(t, RouterConfig{URL: servers[1].ClientURL(), Name: "b"})
	waitPeers(t, a, b)
	la, lb := new(routertest.Listener), new(routertest.Listener)
	t.Cleanup(a.Listen(la))
	t.Cleanup(b.Listen(lb))
	here, there := new(routertest.Receiver), new(routertest.Receiver)
	t.Cleanup(a.Register("app", "bob", here))
	t.Cleanup(b.Register("app", "bob", there))
	for i := range 10 {
		a.Deliver("app", []string{"bob", "carol"}, event(strconv.Itoa(i)))
	}
	eventually(t, "b's listener is told", func() bool { return lb.MissedCount() > 0 })
	if got := len(here.Events()); got != 10 {
		t.Errorf("bob's session on a received %d events, want 10", got)
	}
	sa, sb := a.Stats(), b.Stats()
	if sa.DroppedOut != 20 || sa.MissedSent == 0 || sb.MissedReceived == 0 {
		t.Errorf("a: %+v, b: %+v; want 20 events dropped by a, reported to b", sa, sb)
	}
	time.Sleep(routertest.Quiet)
	if got := len(there.Events()); got != 0 {
		t.Errorf("bob's session on b received %d events", got)
	}
	if got := la.MissedCount(); got != 0 {
		t.Errorf("a's listener was told %d times", got)
	}
}

// TestMissedCoalesced: many reasons to tell the listeners within an
// interval make one call, at its end, after the first.
func TestMissedCoalesced(t *testing.T) {
	r := openNodes(t, startCluster(t, 1), RouterConfig{MissedInterval: time.Second})[0]
	l := new(routertest.Listener)
	t.Cleanup(r.Listen(l))
	r.triggerMissed()
	eventually(t, "the listener is told", func() bool { return l.MissedCount() == 1 })
	for range 1000 {
		r.triggerMissed()
	}
	eventually(t, "the listener is told again", func() bool { return l.MissedCount() == 2 })
	time.Sleep(routertest.Quiet)
	if got := l.MissedCount(); got != 2 {
		t.Errorf("the listener was told %d times, want 2", got)
	}
}

// TestNeverBlocksWhileNATSDown: Deliver and Broadcast return while NATS is
// unreachable, and this node's sessions and listeners still get
// everything.
func TestNeverBlocksWhileNATSDown(t *testing.T) {
	servers := startCluster(t, 1)
	r := openNodes(t, servers, RouterConfig{})[0]
	l := new(routertest.Listener)
	t.Cleanup(r.Listen(l))
	bob := new(routertest.Receiver)
	t.Cleanup(r.Register("app", "bob", bob))
	servers[0].Shutdown()
	eventually(t, "the router notices", func() bool { return !r.nc.IsConnected() })
	const n = 10000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			r.Deliver("app", []string{"bob", "carol"}, event(strconv.Itoa(i)))
			r.Broadcast("app", core.Event{Group: "g"})
		}
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("Deliver and Broadcast blocked")
	}
	if got := len(bob.Events()); got != n {
		t.Errorf("bob received %d events, want %d", got, n)
	}
	if evs, _ := l.Events(); len(evs) != n {
		t.Errorf("the listener heard %d broadcasts, want %d", len(evs), n)
	}
	// Registering does not wait for an unreachable NATS either.
	unregister := r.Register("app", "dave", new(routertest.Receiver))
	unregister()
}

// TestStartBeforeNATS: a router starts while its NATS server is not up
// yet, connects once it is, tells its listeners, and routes.
func TestStartBeforeNATS(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	a := openRouter(t, RouterConfig{URL: "nats://" + addr, Name: "a"})
	la := new(routertest.Listener)
	t.Cleanup(a.Listen(la))
	bob := new(routertest.Receiver)
	t.Cleanup(a.Register("app", "bob", bob))
	s, err := StartServer(ServerConfig{Listen: addr, Name: "late", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	eventually(t, "a connects and tells its listener", func() bool { return la.MissedCount() > 0 })
	b := openRouter(t, RouterConfig{URL: s.ClientURL(), Name: "b"})
	waitPeers(t, a, b)
	b.Deliver("app", []string{"bob"}, event("hi"))
	eventually(t, "bob receives what b delivers", func() bool { return len(bob.Events()) == 1 })
}

// TestSharedConn: a router given a connection uses it, hears none of its
// own messages on it (the connection echoes), and leaves it open and
// without its subscriptions on Close.
func TestSharedConn(t *testing.T) {
	servers := startCluster(t, 1)
	nc, err := nats.Connect(servers[0].ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	a, err := NewNATSRouter(RouterConfig{Conn: nc, Name: "a", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	b := openRouter(t, RouterConfig{URL: servers[0].ClientURL(), Name: "b"})
	waitPeers(t, a, b)
	la := new(routertest.Listener)
	stop := a.Listen(la)
	defer stop()
	bobA, bobB := new(routertest.Receiver), new(routertest.Receiver)
	unregister := a.Register("app", "bob", bobA)
	defer unregister()
	t.Cleanup(b.Register("app", "bob", bobB))
	a.Deliver("app", []string{"bob"}, event("from a"))
	a.Broadcast("app", core.Event{Group: "g"})
	b.Deliver("app", []string{"bob"}, event("from b"))
	eventually(t, "both sessions receive both events", func() bool {
		return len(bobA.Events()) == 2 && len(bobB.Events()) == 2
	})
	time.Sleep(routertest.Quiet)
	if got := len(bobA.Events()); got != 2 {
		t.Errorf("bob's session on a received %d events, want 2", got)
	}
	if evs, _ := la.Events(); len(evs) != 2 {
		t.Errorf("a's listener heard %+v, want its broadcast and b's event", evs)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if nc.IsClosed() || nc.NumSubscriptions() != 0 {
		t.Errorf("after Close the connection is closed (%v) or has %d subscriptions", nc.IsClosed(), nc.NumSubscriptions())
	}
	eventually(t, "b forgets a", func() bool { return len(b.Peers()) == 0 })
}

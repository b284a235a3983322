package client_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/testserver"
	"github.com/qim-im/qim/internal/udprelay"
)

// migrateTo moves c to a new socket on addr and checks that the active path
// uses it.
func migrateTo(t *testing.T, c *client.Client, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := c.Migrate(ctx, addr); err != nil {
		t.Fatalf("Migrate to %s: %v", addr, err)
	}
	sockets, transports, local := client.SocketsOf(c)
	if ip := local.(*net.UDPAddr).IP.String(); ip != addr {
		t.Fatalf("active path on %v after migrating to %s", local, addr)
	}
	if sockets > 2 || transports > 3 {
		t.Fatalf("after migrating: %d sockets, %d transports", sockets, transports)
	}
}

// conversation sends from one client to another until told to stop (and at
// least min messages), and returns how many it sent.
func chatter(ctx context.Context, from *client.Client, to string, min int, stop *atomic.Bool) (int, error) {
	n := 0
	for n < min || !stop.Load() {
		n++
		if _, err := from.Send(ctx, client.ToUser(to), client.Outgoing{Text: fmt.Sprintf("%s%d", from.User(), n)}); err != nil {
			return n, fmt.Errorf("%s: send %d: %w", from.User(), n, err)
		}
	}
	return n, nil
}

// collect receives n messages of the conversation with peer, checking
// that they are peer1..peerN in order with increasing seqs.
func collect(t *testing.T, c *client.Client, peer string, n int) {
	t.Helper()
	var last uint64
	for i, m := range recv(t, c, n) {
		if want := fmt.Sprintf("%s%d", peer, i+1); client.Text(m) != want || m.GetSeq() <= last || m.GetFromUser() != peer {
			t.Fatalf("%s: message %d is %q seq %d (after seq %d), want %q", c.User(), i, client.Text(m), m.GetSeq(), last, want)
		}
		last = m.GetSeq()
	}
}

func TestMigrateTenTimes(t *testing.T) {
	srv := startServer(t)
	// Nobody reads Messages until the end: a full inbox would hold back
	// the conversation's stream, and the answers to the sends with it.
	cfg := config(srv, "alice", "phone")
	cfg.LocalAddr = "127.0.0.2"
	cfg.Inbox = 100_000
	alice := dialConfig(t, cfg)
	cfg = config(srv, "bob", "phone")
	cfg.Inbox = 100_000
	bob := dialConfig(t, cfg)
	conn := client.ConnOf(alice)
	if _, _, local := client.SocketsOf(alice); local.(*net.UDPAddr).IP.String() != "127.0.0.2" {
		t.Fatalf("dialed from %v", local)
	}

	// Both directions flow while alice moves between networks.
	ctx := ctxT(t)
	var stop atomic.Bool
	var sent [2]int
	var errs [2]error
	var wg sync.WaitGroup
	wg.Go(func() { sent[0], errs[0] = chatter(ctx, alice, "bob", 300, &stop) })
	wg.Go(func() { sent[1], errs[1] = chatter(ctx, bob, "alice", 300, &stop) })
	for i := range 10 {
		time.Sleep(20 * time.Millisecond)
		migrateTo(t, alice, []string{"127.0.0.3", "127.0.0.2"}[i%2])
	}
	stop.Store(true)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	collect(t, bob, "alice", sent[0])
	collect(t, alice, "bob", sent[1])
	quiet(t, alice)
	quiet(t, bob)
	// The same session throughout: one CONNECT per user on the server, no
	// reconnection, the same QUIC connection, and no error.
	if n := srv.Connects(); n != 2 {
		t.Fatalf("the server opened %d sessions, want 2", n)
	}
	if n := alice.Reconnects(); n != 0 {
		t.Fatalf("alice reconnected %d times", n)
	}
	if client.ConnOf(alice) != conn {
		t.Fatal("alice's connection was replaced")
	}
	select {
	case <-alice.Done():
		t.Fatalf("alice's session ended: %v", alice.Err())
	default:
	}
	t.Logf("sent %d and %d messages across 10 migrations", sent[0], sent[1])
}

// openFDs counts the open file descriptors of the process.
func openFDs(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count file descriptors: %v", err)
	}
	return len(fds)
}

func TestMigrateBoundedSockets(t *testing.T) {
	srv := startServer(t)
	cfg := config(srv, "alice", "phone")
	cfg.LocalAddr = "127.0.0.2"
	alice := dialConfig(t, cfg)
	bob := dial(t, srv, "bob", "phone")
	send(t, alice, client.ToUser("bob"), "alice1")
	// Received: the push stream to bob and its goroutines, client and
	// server, are counted in before.
	collect(t, bob, "alice", 1)

	before, goroutines := openFDs(t), runtime.NumGoroutine()
	const switches = 100
	for i := range switches {
		to := []string{"127.0.0.3", "127.0.0.2"}[i%2]
		if i%4 >= 2 { // half of the switches prepared
			if err := alice.PrepareMigration(ctxT(t), to); err != nil {
				t.Fatalf("prepare %s: %v", to, err)
			}
		}
		migrateTo(t, alice, to)
		if i%10 == 9 {
			send(t, alice, client.ToUser("bob"), fmt.Sprint("alice", i/10+2))
		}
	}
	if after := openFDs(t); after-before >= 5 {
		t.Fatalf("%d open file descriptors after %d migrations, %d before", after, switches, before)
	}
	// At most three transports, with two quic-go goroutines each.
	if after := runtime.NumGoroutine(); after-goroutines >= 10 {
		t.Fatalf("%d goroutines after %d migrations, %d before", after, switches, goroutines)
	}
	sockets, transports, _ := client.SocketsOf(alice)
	t.Logf("after %d migrations: %+d file descriptors, %+d goroutines, %d sockets, %d transports",
		switches, openFDs(t)-before, runtime.NumGoroutine()-goroutines, sockets, transports)
	for i, m := range recv(t, bob, switches/10) {
		if want := fmt.Sprint("alice", i+2); client.Text(m) != want {
			t.Fatalf("bob: message %d is %q, want %q", i, client.Text(m), want)
		}
	}
	send(t, bob, client.ToUser("alice"), "bob1")
	collect(t, alice, "bob", 1)
	if n := srv.Connects(); n != 2 || alice.Reconnects() != 0 {
		t.Fatalf("the server opened %d sessions, want 2; alice reconnected %d times", n, alice.Reconnects())
	}
}

func TestMigrateFailureKeepsPath(t *testing.T) {
	srv := startServer(t)
	cfg := config(srv, "alice", "phone")
	cfg.LocalAddr = "127.0.0.2"
	alice := dialConfig(t, cfg)
	bob := dial(t, srv, "bob", "phone")

	// Probing that does not finish in time (a network that cannot reach
	// the server) and an address the device does not have: the connection
	// stays on its path.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := alice.Migrate(ctx, "127.0.0.3"); err == nil {
		t.Fatal("Migrate with a cancelled context succeeded")
	}
	if err := alice.Migrate(ctxT(t), "192.0.2.1"); err == nil {
		t.Fatal("Migrate to an address that is not local succeeded")
	}
	if err := alice.Migrate(ctxT(t), "not an address"); err == nil {
		t.Fatal("Migrate to a bad address succeeded")
	}
	if sockets, _, local := client.SocketsOf(alice); sockets != 1 || local.(*net.UDPAddr).IP.String() != "127.0.0.2" {
		t.Fatalf("after failed migrations: %d sockets, active path on %v", sockets, local)
	}
	send(t, alice, client.ToUser("bob"), "alice1")
	collect(t, bob, "alice", 1)

	// Migrating an ended session fails.
	alice.Close()
	if err := alice.Migrate(ctxT(t), "127.0.0.3"); err == nil {
		t.Fatal("Migrate after Close succeeded")
	}
}

// sameSession checks that c kept its first connection and its session:
// no reconnection, and the server opened only the sessions it had.
func sameSession(t *testing.T, srv *testserver.Server, c *client.Client, conn *quic.Conn, sessions uint64) {
	t.Helper()
	if client.ConnOf(c) != conn || c.Reconnects() != 0 {
		t.Fatalf("%s: connection replaced (%d reconnections)", c.User(), c.Reconnects())
	}
	if n := srv.Connects(); n != sessions {
		t.Fatalf("the server opened %d sessions, want %d", n, sessions)
	}
}

func TestPrepareMigration(t *testing.T) {
	srv := startServer(t)
	// A round trip of 100 ms: a probe cannot take less.
	const delay = 50 * time.Millisecond
	relay, err := udprelay.New(udprelay.Config{Target: srv.Addr, Delay: delay})
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	cfg := config(srv, "alice", "phone")
	cfg.Addr, cfg.LocalAddr = relay.Addr(), "127.0.0.2"
	alice := dialConfig(t, cfg)
	bob := dial(t, srv, "bob", "phone")
	conn := client.ConnOf(alice)

	// Prepared, not moved: two sockets, the connection still on the first.
	if err := alice.PrepareMigration(ctxT(t), "127.0.0.3"); err != nil {
		t.Fatal(err)
	}
	if sockets, _, local := client.SocketsOf(alice); sockets != 2 || local.(*net.UDPAddr).IP.String() != "127.0.0.2" {
		t.Fatalf("after preparing: %d sockets, active path on %v", sockets, local)
	}
	send(t, alice, client.ToUser("bob"), "alice1")
	collect(t, bob, "alice", 1)

	// The switch needs no round trip.
	start := time.Now()
	if err := alice.Migrate(ctxT(t), "127.0.0.3"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d >= delay {
		t.Fatalf("the prepared switch took %v, half a round trip is %v", d, delay)
	}
	if sockets, _, local := client.SocketsOf(alice); sockets != 2 || local.(*net.UDPAddr).IP.String() != "127.0.0.3" {
		t.Fatalf("after the switch: %d sockets, active path on %v", sockets, local)
	}
	send(t, bob, client.ToUser("alice"), "bob1")
	collect(t, alice, "bob", 1)

	// A path prepared long ago is probed again before the switch.
	if err := alice.PrepareMigration(ctxT(t), "127.0.0.2"); err != nil {
		t.Fatal(err)
	}
	client.AgePreparedPath(alice, time.Minute)
	start = time.Now()
	migrateTo(t, alice, "127.0.0.2")
	if d := time.Since(start); d < 2*delay {
		t.Fatalf("the switch to a stale prepared path took %v, less than a round trip", d)
	}
	send(t, bob, client.ToUser("alice"), "bob2")
	if m := recv(t, alice, 1)[0]; client.Text(m) != "bob2" {
		t.Fatalf("alice got %q, want bob2", client.Text(m))
	}
	sameSession(t, srv, alice, conn, 2)
}

// TestPreparedPathsAbandoned prepares paths that are never used: replaced
// by another, left for a migration elsewhere, and open when the client
// closes (TestMain checks for goroutine leaks).
func TestPreparedPathsAbandoned(t *testing.T) {
	srv := startServer(t)
	cfg := config(srv, "alice", "phone")
	cfg.LocalAddr = "127.0.0.2"
	alice := dialConfig(t, cfg)
	bob := dial(t, srv, "bob", "phone")
	conn := client.ConnOf(alice)
	send(t, alice, client.ToUser("bob"), "alice1")
	collect(t, bob, "alice", 1)

	prepare := func(addr string) {
		t.Helper()
		if err := alice.PrepareMigration(ctxT(t), addr); err != nil {
			t.Fatalf("prepare %s: %v", addr, err)
		}
		if sockets, transports, _ := client.SocketsOf(alice); sockets != 2 || transports > 3 {
			t.Fatalf("after preparing %s: %d sockets, %d transports", addr, sockets, transports)
		}
	}
	before, goroutines := openFDs(t), runtime.NumGoroutine()
	addrs := []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"}
	for i := range 12 {
		// Three networks; the device is on addrs[i%3].
		next, other := addrs[(i+1)%3], addrs[(i+2)%3]
		if i%2 == 0 {
			prepare(other)
			migrateTo(t, alice, next) // leaves the prepared path unused
		} else {
			prepare(other)
			prepare(next) // replaces it
			migrateTo(t, alice, next)
		}
	}
	if after := openFDs(t); after-before >= 3 {
		t.Fatalf("%d open file descriptors after abandoning prepared paths, %d before", after, before)
	}
	if after := runtime.NumGoroutine(); after-goroutines >= 10 {
		t.Fatalf("%d goroutines after abandoning prepared paths, %d before", after, goroutines)
	}
	send(t, bob, client.ToUser("alice"), "bob1")
	collect(t, alice, "bob", 1)
	send(t, alice, client.ToUser("bob"), "alice2")
	if m := recv(t, bob, 1)[0]; client.Text(m) != "alice2" {
		t.Fatalf("bob got %q, want alice2", client.Text(m))
	}
	sameSession(t, srv, alice, conn, 2)
	prepare("127.0.0.4") // still prepared at Close
}

// TestMigrateAfterCuts moves the connection after its network died, five
// times: from the third move on, it reuses transports. quic-go answers the
// server's PATH_CHALLENGE on the transport it came in on only for the
// first path made on that transport, and on the active path otherwise: the
// dead network. The server then validates the new path only after its
// challenge backoff (100 ms), which the client avoids by keeping one path
// per transport.
func TestMigrateAfterCuts(t *testing.T) {
	srv := startServer(t)
	var links udprelay.Links
	networks := []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")}
	cfg := config(srv, "alice", "phone")
	cfg.LocalAddr, cfg.ListenPacket = networks[0].String(), links.ListenPacket
	alice := dialConfig(t, cfg)
	bob := dial(t, srv, "bob", "phone")
	fastest := time.Hour
	for i := range 5 {
		from, to := networks[i%2], networks[(i+1)%2]
		links.SetDown(from, true)
		text := fmt.Sprint("bob", i+1)
		send(t, bob, client.ToUser("alice"), text) // stored; the push is lost
		start := time.Now()
		migrateTo(t, alice, to.String())
		m := recv(t, alice, 1)[0]
		took := time.Since(start)
		if client.Text(m) != text {
			t.Fatalf("alice got %q, want %q", client.Text(m), text)
		}
		t.Logf("move %d: the message waiting arrived %v after the switch began", i+1, took)
		if i >= 2 {
			fastest = min(fastest, took)
		}
		links.SetDown(from, false)
		time.Sleep(50 * time.Millisecond) // the server leaves the old path: the next move need not wait
	}
	if fastest >= 100*time.Millisecond {
		t.Fatalf("moves on reused transports took %v at best, want a round trip and no backoff", fastest)
	}
	if n := srv.Connects(); n != 2 || alice.Reconnects() != 0 {
		t.Fatalf("the server opened %d sessions, want 2; alice reconnected %d times", n, alice.Reconnects())
	}
}

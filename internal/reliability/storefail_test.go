package reliability_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// logFault returns the operating system's file system, except that while
// on is set, operations of kind on Pebble's write-ahead log (the files
// ending in ".log") fail.
func logFault(kind errorfs.OpKind, on *atomic.Bool) vfs.FS {
	return errorfs.Wrap(vfs.Default, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if on.Load() && op.Kind == kind && strings.HasSuffix(op.Path, ".log") {
			return errorfs.ErrInjected
		}
		return nil
	}))
}

// TestStoreFailure breaks the store of a running server: the write, or the
// sync, of Pebble's log starts failing. The next message is answered
// STORE_UNAVAILABLE, with no ack; the server goes on serving, answering
// every request with a clear code at once, and keeps every connection;
// nothing unacknowledged is pushed. The server then stops without hanging
// (its Close may report the failure). Restarted on the same data directory
// with a working disk, it has every acknowledged message once, with dense
// seqs, and the failed message, retried with the same ClientMsgID, is stored
// once: as a duplicate if the failed write reached the disk, afresh if not,
// with no seq skipped either way.
func TestStoreFailure(t *testing.T) {
	for _, tt := range []struct {
		name string
		kind errorfs.OpKind
	}{
		{"log write", errorfs.OpFileWrite},
		{"log sync", errorfs.OpFileSyncData},
	} {
		t.Run(tt.name, func(t *testing.T) { testStoreFailure(t, tt.kind) })
	}
}

func testStoreFailure(t *testing.T, kind errorfs.OpKind) {
	var broken atomic.Bool
	srv := testserver.Start(t, testserver.Options{StoreFS: logFault(kind, &broken)})
	alice := dial(t, demoConfig(srv, "alice", "phone"))
	bob := dial(t, demoConfig(srv, "bob", "phone"))
	carol := dial(t, demoConfig(srv, "carol", "phone"))
	dave := dial(t, demoConfig(srv, "dave", "phone"))
	g, err := bob.CreateGroup(ctxT(t), "failure")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.JoinGroup(ctxT(t), g.GetId()); err != nil {
		t.Fatal(err)
	}
	toGroup := client.ToGroup(g.GetId())

	sent := make(map[string]sentMsg) // every acknowledged message
	send := func(c *client.Client, to client.Peer, cid string) (*qimpb.MessageAck, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		ack, err := c.Send(ctx, to, client.Outgoing{Text: cid, ClientMsgID: cid})
		if err == nil {
			conv := store.GroupConv(to.Group)
			if to.User != "" {
				conv = store.DirectConv(c.User(), to.User)
			}
			sent[cid] = sentMsg{conv: conv, id: ack.GetId(), seq: ack.GetSeq(), dup: ack.GetDuplicate()}
		}
		return ack, err
	}
	mustSend := func(c *client.Client, to client.Peer, cid string) {
		t.Helper()
		if _, err := send(c, to, cid); err != nil {
			t.Fatalf("%s: send %s: %v", c.User(), cid, err)
		}
	}
	for _, cid := range []string{"a1", "a2", "a3", "a4", "a5"} {
		mustSend(alice, client.ToUser("bob"), cid)
	}
	mustSend(alice, toGroup, "g1")
	mustSend(alice, toGroup, "g2")
	mustSend(carol, client.ToUser("dave"), "c1")
	recv(t, bob, 7, waitTime)
	recv(t, dave, 1, waitTime)
	quiet(t, bob) // and lets the devices' acknowledgements reach the store

	// The disk fails. The next message cannot be stored.
	broken.Store(true)
	start := time.Now()
	ack, err := send(alice, client.ToUser("bob"), "a6")
	firstAnswer := time.Since(start)
	if code := codeOf(err); code != qimpb.Code_STORE_UNAVAILABLE || ack != nil {
		t.Fatalf("send with a failing log: ack %v, error %v; want no ack and STORE_UNAVAILABLE", ack, err)
	}
	t.Logf("send with the failing log: %v after %v", err, firstAnswer.Round(time.Microsecond))

	// Every later request gets a clear answer at once, whatever the disk
	// does now: the store refuses everything until it is reopened.
	erinCfg := demoConfig(srv, "erin", "phone")
	for _, rq := range []struct {
		name string
		do   func(ctx context.Context) error
		want qimpb.Code
	}{
		{"alice: MESSAGE a6 again", func(context.Context) error { return second(send(alice, client.ToUser("bob"), "a6")) }, qimpb.Code_STORE_UNAVAILABLE},
		{"alice: MESSAGE to the group", func(context.Context) error { return second(send(alice, toGroup, "g3")) }, qimpb.Code_STORE_UNAVAILABLE},
		{"carol: MESSAGE to dave", func(context.Context) error { return second(send(carol, client.ToUser("dave"), "c2")) }, qimpb.Code_STORE_UNAVAILABLE},
		{"carol: CONTACT_LIST", func(ctx context.Context) error { return second(carol.Contacts(ctx)) }, qimpb.Code_STORE_UNAVAILABLE},
		{"carol: GROUP_CREATE", func(ctx context.Context) error { return second(carol.CreateGroup(ctx, "new")) }, qimpb.Code_STORE_UNAVAILABLE},
		{"dave: GROUP_JOIN", func(ctx context.Context) error { return second(dave.JoinGroup(ctx, g.GetId())) }, qimpb.Code_STORE_UNAVAILABLE},
		// Served from the recent cache, which holds only stored messages.
		{"bob: GROUP_HISTORY", func(ctx context.Context) error { return second(bob.History(ctx, g.GetId(), 0, 10)) }, qimpb.Code_OK},
		// offline=false never touches the store.
		{"alice: MESSAGE offline=false to bob", func(ctx context.Context) error {
			return second(alice.Send(ctx, client.ToUser("bob"), client.Outgoing{Text: "ephemeral", NoOffline: true}))
		}, qimpb.Code_OK},
		// Tokens are checked against secrets held in memory, so CONNECT
		// succeeds; the session then cannot read the device's inbox and
		// ends with DISCONNECT STORE_UNAVAILABLE.
		{"erin: CONNECT", func(ctx context.Context) error {
			c, err := client.Dial(ctx, erinCfg)
			if err != nil {
				return err
			}
			defer c.Close()
			select {
			case <-c.Done():
				return c.Err()
			case <-ctx.Done():
				return fmt.Errorf("session still open: %w", ctx.Err())
			}
		}, qimpb.Code_STORE_UNAVAILABLE},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		start := time.Now()
		err := rq.do(ctx)
		cancel()
		took := time.Since(start)
		if code := codeOf(err); code != rq.want {
			t.Errorf("%s after the failure: %v (%v), want %v", rq.name, code, err, rq.want)
		} else {
			t.Logf("%s after the failure: %v in %v", rq.name, code, took.Round(time.Microsecond))
		}
	}
	// bob got the offline=false message and nothing that was not stored.
	if m := recv(t, bob, 1, waitTime)[0]; m.GetSeq() != 0 || client.Text(m) != "ephemeral" {
		t.Errorf("bob got seq %d %q, want the offline=false message", m.GetSeq(), client.Text(m))
	}
	quiet(t, bob)
	for _, c := range []*client.Client{alice, bob, carol, dave} {
		select {
		case <-c.Done():
			t.Errorf("%s's session ended after the store failure: %v", c.User(), c.Err())
		default:
		}
	}

	// Stop the server: it must not hang; its Close may report the failure.
	start = time.Now()
	closed := make(chan error, 1)
	go func() { closed <- srv.Close() }()
	select {
	case err = <-closed:
	case <-time.After(waitTime):
		t.Fatalf("closing the server with a failed store hung for %v\n%s", waitTime, clientStacks())
	}
	t.Logf("close after the failure took %v: %v", time.Since(start).Round(time.Millisecond), err)
	for _, c := range []*client.Client{alice, bob, carol, dave} {
		select {
		case <-c.Done():
			if !errors.Is(c.Err(), &client.Error{Code: qimpb.Code_GOING_AWAY}) {
				t.Errorf("%s's session ended with %v, want GOING_AWAY", c.User(), c.Err())
			}
		case <-time.After(waitTime):
			t.Errorf("%s's session did not end when the server closed", c.User())
		}
	}

	// Restart on the same data directory with a working disk.
	broken.Store(false)
	start = time.Now()
	srv = testserver.Start(t, testserver.Options{DataDir: srv.DataDir})
	t.Logf("restart on a working disk took %v", time.Since(start).Round(time.Millisecond))
	alice = dial(t, demoConfig(srv, "alice", "phone"))
	carol = dial(t, demoConfig(srv, "carol", "phone"))
	for _, r := range []struct {
		c        *client.Client
		to       client.Peer
		cid      string
		wantSeq  uint64
		maybeDup bool // the failed write may have reached the disk
	}{
		{alice, client.ToUser("bob"), "a6", 6, true},
		{alice, toGroup, "g3", 3, false},
		{carol, client.ToUser("dave"), "c2", 2, false},
		{alice, client.ToUser("bob"), "a7", 7, false},
	} {
		ack, err := send(r.c, r.to, r.cid)
		if err != nil {
			t.Fatalf("%s: retry %s after the restart: %v", r.c.User(), r.cid, err)
		}
		if ack.GetSeq() != r.wantSeq || (ack.GetDuplicate() && !r.maybeDup) {
			t.Errorf("%s: %s after the restart: seq %d, duplicate %t; want seq %d", r.c.User(), r.cid, ack.GetSeq(), ack.GetDuplicate(), r.wantSeq)
		}
		if r.maybeDup {
			t.Logf("the failed message, retried after the restart: seq %d, duplicate %t (stored %s)", ack.GetSeq(), ack.GetDuplicate(),
				map[bool]string{true: "by the failed write", false: "by the retry"}[ack.GetDuplicate()])
		}
	}

	// Fresh devices read everything at the wire.
	var total audit
	b := dialRawDevice(t, srv.Addr, srv.ClientTLS(), "bob", srv.Token("bob"), "audit")
	direct, group := store.DirectConv("alice", "bob"), store.GroupConv(g.GetId())
	b.waitFor(t, map[string]int{direct: 7, group: 3}, waitTime)
	total.add(checkConv(t, "bob/audit", direct, b.messages(direct), sent))
	total.add(checkConv(t, "bob/audit", group, b.messages(group), sent))
	d := dialRawDevice(t, srv.Addr, srv.ClientTLS(), "dave", srv.Token("dave"), "audit")
	cd := store.DirectConv("carol", "dave")
	d.waitFor(t, map[string]int{cd: 2}, waitTime)
	total.add(checkConv(t, "dave/audit", cd, d.messages(cd), sent))
	b.checkProblems(t)
	d.checkProblems(t)
	t.Logf("audit after the restart: %s", total)
	if !total.clean() || total.unacked != 0 {
		t.Errorf("audit: %s", total)
	}
}

// codeOf returns the code of the server's refusal in err, OK for nil, and
// -1 for an error that carries no code (a timeout, a lost connection).
func codeOf(err error) qimpb.Code {
	var ce *client.Error
	switch {
	case err == nil:
		return qimpb.Code_OK
	case errors.As(err, &ce):
		return ce.Code
	}
	return -1
}

func second[T any](_ T, err error) error { return err }

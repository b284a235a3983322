package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/daemon"
	"github.com/qim-im/qim/internal/testserver"
	"github.com/qim-im/qim/internal/udprelay"
	qimpb "github.com/qim-im/qim/proto"
)

// events collects what a client's Events channel gives, and drains its
// Messages (counted), until the client ends.
type events struct {
	mu   sync.Mutex
	evs  []*qimpb.Event
	msgs []*qimpb.Message
}

func collect(c *client.Client) *events {
	e := &events{}
	go func() {
		for ev := range c.Events() {
			e.mu.Lock()
			e.evs = append(e.evs, ev)
			e.mu.Unlock()
		}
	}()
	go func() {
		for m := range c.Messages() {
			e.mu.Lock()
			e.msgs = append(e.msgs, m)
			e.mu.Unlock()
		}
	}()
	return e
}

func (e *events) all() []*qimpb.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*qimpb.Event(nil), e.evs...)
}

func (e *events) messages() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.msgs)
}

// receipt returns the furthest receipt of user about the conversation
// to seen so far, and checks that the receipts came in never going back.
func (e *events) receipt(t *testing.T, user string, to client.Peer) (delivered, read, private uint64) {
	t.Helper()
	for _, ev := range e.all() {
		r := ev.Receipt
		if r == nil || r.User != user || r.ToUser != to.User || r.ToGroup != to.Group {
			continue
		}
		if r.Delivered < delivered || r.Read < read || r.ReadPrivate < private {
			t.Fatalf("receipt of %s went back: %v after delivered %d read %d private %d", user, r, delivered, read, private)
		}
		delivered, read, private = r.Delivered, r.Read, r.ReadPrivate
	}
	return delivered, read, private
}

// presences returns the presence events about user, in order.
func (e *events) presences(user string) []*qimpb.Presence {
	var out []*qimpb.Presence
	for _, ev := range e.all() {
		if p := ev.Presence; p != nil && p.User == user {
			out = append(out, p)
		}
	}
	return out
}

func (e *events) typing(from string) []*qimpb.Typing {
	var out []*qimpb.Typing
	for _, ev := range e.all() {
		if ty := ev.Typing; ty != nil && ty.FromUser == from {
			out = append(out, ty)
		}
	}
	return out
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("within %v: %s", timeout, what)
		}
	}
}

func device(t *testing.T, srv *testserver.Server, user, dev string, change func(*client.Config)) *client.Client {
	t.Helper()
	return dialVia(t, srv, srv.Addr, user, func(c *client.Config) {
		c.Device = dev
		if change != nil {
			change(c)
		}
	})
}

// TestReceiptsEveryDevice: delivered and read receipts reach every device
// of the sender, read cursors reach the reader's other devices, unread
// counts agree across devices and survive a reconnection, and no device
// ever sees a receipt go back.
func TestReceiptsEveryDevice(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	alicePhone, aliceTablet := device(t, srv, "alice", "phone", nil), device(t, srv, "alice", "tablet", nil)
	bobPhone, bobLaptop := device(t, srv, "bob", "phone", nil), device(t, srv, "bob", "laptop", nil)
	ap, at, bp, bl := collect(alicePhone), collect(aliceTablet), collect(bobPhone), collect(bobLaptop)
	for i := range 5 {
		if _, err := alicePhone.Send(ctx, client.ToUser("bob"), client.Outgoing{Text: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "bob's devices receive 5 messages", 10*time.Second, func() bool { return bp.messages() == 5 && bl.messages() == 5 })
	bob := client.ToUser("bob")
	for _, e := range []*events{ap, at} {
		waitFor(t, "alice's devices learn delivered 5", 10*time.Second, func() bool { d, _, _ := e.receipt(t, "bob", bob); return d == 5 })
	}
	res, err := bobPhone.Read(ctx, client.ToUser("alice"), 3)
	if err != nil {
		t.Fatal(err)
	}
	if res.ReadSeq != 3 || res.Unread != 2 {
		t.Fatalf("READ 3 answered %v", res)
	}
	for _, e := range []*events{ap, at} {
		waitFor(t, "alice's devices learn read 3", 10*time.Second, func() bool { _, r, _ := e.receipt(t, "bob", bob); return r == 3 })
	}
	waitFor(t, "bob's laptop learns his read cursor", 10*time.Second, func() bool { _, _, p := bl.receipt(t, "bob", client.ToUser("alice")); return p == 3 })
	if _, _, p := bp.receipt(t, "bob", client.ToUser("alice")); p != 0 {
		t.Errorf("the reading device was told its own read (%d)", p)
	}
	in, err := bobLaptop.Inbox(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(in) != 1 || in[0].ToUser != "alice" || in[0].ReadSeq != 3 || in[0].Unread != 2 || in[0].LastSeq != 5 {
		t.Fatalf("bob's laptop's inbox: %v", in)
	}
	// Reading backwards changes nothing.
	if res, err = bobLaptop.Read(ctx, client.ToUser("alice"), 1); err != nil || res.ReadSeq != 3 {
		t.Fatalf("READ 1 after 3: %v, %v", res, err)
	}
	// A device that reconnects learns it all in Connected.
	aliceTablet.Close()
	again := device(t, srv, "alice", "tablet", nil)
	var c *qimpb.ConversationState
	for _, x := range again.Connected().GetInbox().GetConversations() {
		if x.ToUser == "bob" {
			c = x
		}
	}
	if c == nil || c.PeerDelivered != 5 || c.PeerRead != 3 || c.Unread != 0 || c.LastSeq != 5 {
		t.Fatalf("alice's tablet's inbox at CONNECT: %v", c)
	}
	ap.receipt(t, "bob", bob) // never went back
	bl.receipt(t, "bob", client.ToUser("alice"))
}

// TestTypingDatagramsAndStreams: typing reaches the other user in QUIC
// datagrams when both sides enabled them, and on the control stream when
// either did not; a flood is cut by the rate limit and delays no message
// of another conversation.
func TestTypingDatagramsAndStreams(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{Metrics: "127.0.0.1:0"})
	sent := func(via string) int {
		t.Helper()
		resp, err := http.Get(srv.MetricsURL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		re := regexp.MustCompile(`qim_events_sent_total\{kind="typing",via="` + via + `"\} (\d+)`)
		m := re.FindSubmatch(b)
		if m == nil {
			return 0
		}
		n, _ := strconv.Atoi(string(m[1]))
		return n
	}
	noDatagrams := func(c *client.Config) {
		c.QUICConfig = &quic.Config{KeepAlivePeriod: 25 * time.Second, MaxIncomingStreams: 1000, MaxIncomingUniStreams: -1}
	}
	for _, tt := range []struct {
		name         string
		sender, recv func(*client.Config)
		datagrams    bool
	}{
		{"datagrams", nil, nil, true},
		{"sender without datagrams", noDatagrams, nil, true},
		{"receiver without datagrams", nil, noDatagrams, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			alice := device(t, srv, "alice-"+tt.name[:4], "phone", tt.sender)
			bob := device(t, srv, "bob-"+tt.name[:4], "phone", tt.recv)
			be := collect(bob)
			if got := bob.Granted(qimpb.Feature_FEATURE_DATAGRAMS); got != tt.datagrams {
				t.Fatalf("bob granted datagrams: %v, want %v", got, tt.datagrams)
			}
			ctx := context.Background()
			dgrams, streams := sent("datagram"), sent("stream")
			if err := alice.Typing(ctx, client.ToUser(bob.User()), true); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "bob sees alice typing", 10*time.Second, func() bool { return len(be.typing(alice.User())) == 1 })
			ty := be.typing(alice.User())[0]
			if !ty.Active || ty.ToUser != alice.User() || ty.TtlMs == 0 {
				t.Fatalf("bob got %v", ty)
			}
			if err := alice.Typing(ctx, client.ToUser(bob.User()), false); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "bob sees alice stop", 10*time.Second, func() bool {
				ts := be.typing(alice.User())
				return len(ts) == 2 && !ts[1].Active
			})
			viaDatagram, viaStream := sent("datagram")-dgrams, sent("stream")-streams
			if want := map[bool][2]int{true: {2, 0}, false: {0, 2}}[tt.datagrams]; viaDatagram != want[0] || viaStream != want[1] {
				t.Fatalf("typing events sent: %d in datagrams, %d on the control stream; want %v", viaDatagram, viaStream, want)
			}
		})
	}

	// A flood: 1,000 typings in a row (as requests, each answered) are
	// refused beyond the limit and reach bob as a handful, and carol's
	// messages to bob all arrive meanwhile.
	alice, bob, carol := device(t, srv, "alice", "phone", noDatagrams), device(t, srv, "bob", "phone", nil), device(t, srv, "carol", "phone", nil)
	be := collect(bob)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var refused int
	start := time.Now()
	wg.Go(func() {
		for range 1000 {
			if err := alice.Typing(ctx, client.ToUser("bob"), true); err != nil {
				refused++
			}
		}
	})
	for i := range 50 {
		if _, err := carol.Send(ctx, client.ToUser("bob"), client.Outgoing{Text: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	waitFor(t, "bob receives carol's 50 messages", 10*time.Second, func() bool { return be.messages() == 50 })
	time.Sleep(200 * time.Millisecond) // typing still on its way
	n, elapsed := len(be.typing("alice")), time.Since(start)
	if max := 4 + int(2*elapsed.Seconds()) + 1; n > max || n == 0 || refused < 1000-max {
		t.Fatalf("bob got %d typing events from a flood over %v (%d refused), want 1 to %d (burst 4, 2/s)", n, elapsed, refused, max)
	}
}

// TestPresenceNoFlap: a contact sees alice online once while she migrates
// ten times, her NAT rebinds and she resumes in 0-RTT; sees her offline
// exactly once, within the grace period and the coalescing window, when
// she really leaves; and a user who is not in her contacts sees nothing.
func TestPresenceNoFlap(t *testing.T) {
	const grace = 2 * time.Second
	srv := testserver.Start(t, testserver.Options{Configure: func(c *daemon.Config) { c.PresenceGrace = grace }})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	relay, err := udprelay.New(udprelay.Config{Target: srv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	bob, carol := device(t, srv, "bob", "phone", nil), device(t, srv, "carol", "phone", nil)
	be, ce := collect(bob), collect(carol)
	// alice and bob are mutual contacts; carol follows alice, who does
	// not have her.
	for _, c := range []*client.Client{bob, carol} {
		if err := c.AddContact(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
	}
	alice := device(t, srv, "alice", "phone", func(c *client.Config) {
		c.Addr = relay.Addr()
		c.Reconnect = true
		c.KeepAlive = 100 * time.Millisecond
		c.ReconnectMin, c.ReconnectMax = 20*time.Millisecond, 200*time.Millisecond
	})
	collect(alice)
	if err := alice.AddContact(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	// Alice came online before she added bob: wait until her presence
	// shows, and reconnect bob, so that he starts from a snapshot.
	waitFor(t, "alice shows online in bob's contacts", 10*time.Second, func() bool {
		_, pres, err := bob.ContactsPresence(ctx)
		return err == nil && pres["alice"].GetState() == qimpb.PresenceState_ONLINE
	})
	bob.Close()
	bob = device(t, srv, "bob", "phone", nil)
	be = collect(bob)
	waitFor(t, "bob sees alice online", 10*time.Second, func() bool { return len(be.presences("alice")) >= 1 })
	if p := be.presences("alice")[0]; p.State != qimpb.PresenceState_ONLINE {
		t.Fatalf("bob's snapshot of alice: %v", p)
	}
	for i := range 10 {
		if err := alice.Migrate(ctx, fmt.Sprintf("127.0.0.%d", 2+i%2)); err != nil {
			t.Fatalf("migration %d: %v", i, err)
		}
		if _, err := alice.Send(ctx, client.ToUser("bob"), client.Outgoing{Text: fmt.Sprint("m", i)}); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		if err := relay.Rebind(); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.Send(ctx, client.ToUser("bob"), client.Outgoing{Text: "after rebind"}); err != nil {
			t.Fatal(err)
		}
	}
	alice.Background()
	time.Sleep(grace / 2)
	if err := alice.Foreground(ctx); err != nil {
		t.Fatal(err)
	}
	if !alice.Used0RTT() {
		t.Errorf("alice's resume did not use 0-RTT")
	}
	time.Sleep(grace + 1500*time.Millisecond) // what an OFFLINE would take
	if ps := be.presences("alice"); len(ps) != 1 {
		t.Fatalf("bob saw %d presence changes of alice during migrations, rebindings and a resume: %v", len(ps)-1, ps)
	}
	left := time.Now()
	alice.Close()
	waitFor(t, "bob sees alice offline", grace+5*time.Second, func() bool { return len(be.presences("alice")) == 2 })
	took := time.Since(left)
	p := be.presences("alice")[1]
	if p.State != qimpb.PresenceState_OFFLINE || p.LastSeen < left.Add(-time.Second).UnixMilli() {
		t.Fatalf("bob got %v", p)
	}
	if took > grace+time.Second+500*time.Millisecond {
		t.Errorf("offline shown %v after alice left, documented: grace (%v) + 1 s", took, grace)
	}
	time.Sleep(1500 * time.Millisecond)
	if ps := be.presences("alice"); len(ps) != 2 {
		t.Fatalf("bob saw %d presence events of alice, want exactly 2 (online, offline)", len(ps))
	}
	if ps := ce.presences("alice"); len(ps) != 0 {
		t.Fatalf("carol, not in alice's contacts, saw %v", ps)
	}
	// Her last seen is in bob's contact list.
	users, pres, err := bob.ContactsPresence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != 1 || pres["alice"].GetState() != qimpb.PresenceState_OFFLINE || pres["alice"].GetLastSeen() == 0 {
		t.Fatalf("bob's contacts: %v %v", users, pres)
	}
}

// TestGroupReceiptWatch: the sender of a group message watches its
// receipts over QUIC and sees the counts rise as the members receive and
// read it, and reads a page of the members' receipts.
func TestGroupReceiptWatch(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	owner := device(t, srv, "owner", "phone", nil)
	oe := collect(owner)
	g, err := owner.CreateGroup(ctx, "team")
	if err != nil {
		t.Fatal(err)
	}
	const n = 6
	var members []*client.Client
	for i := range n {
		m := device(t, srv, fmt.Sprint("member", i), "phone", nil)
		if _, err := m.JoinGroup(ctx, g.Id); err != nil {
			t.Fatal(err)
		}
		members = append(members, m)
	}
	ack, err := owner.Send(ctx, client.ToGroup(g.Id), client.Outgoing{Text: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := owner.GroupReceipts(ctx, g.Id, ack.Seq, "", 0, true)
	if err != nil {
		t.Fatal(err)
	}
	if res.Count.GetMembers() != n {
		t.Fatalf("count %v, want %d members", res.Count, n)
	}
	counted := func(delivered, read uint32) func() bool {
		return func() bool {
			last := res.Count // the counts at the watch's start, then its events
			for _, ev := range oe.all() {
				if ev.ReceiptCount != nil {
					last = ev.ReceiptCount
				}
			}
			return last != nil && last.Delivered == delivered && last.Read == read && last.Seq == ack.Seq
		}
	}
	for _, m := range members {
		collect(m) // receives and acknowledges the message
	}
	waitFor(t, "the watch counts every member's delivery", 10*time.Second, counted(n, 0))
	for _, m := range members[:3] {
		if _, err := m.Read(ctx, client.ToGroup(g.Id), ack.Seq); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the watch counts 3 reads", 10*time.Second, counted(n, 3))
	page, err := owner.GroupReceipts(ctx, g.Id, ack.Seq, "member2", 2, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Receipts) != 2 || page.Receipts[0].User != "member3" || page.Receipts[0].Read != 0 || page.Receipts[0].Delivered != ack.Seq || page.NextUser != "member4" {
		t.Fatalf("page after member2: %v next %q", page.Receipts, page.NextUser)
	}
}

// TestPresenceGroups: with --presence-groups, members of a small group see
// each other's presence without being contacts; without it they do not.
func TestPresenceGroups(t *testing.T) {
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprint("presence-groups=", on), func(t *testing.T) {
			srv := testserver.Start(t, testserver.Options{Configure: func(c *daemon.Config) {
				c.PresenceGroups = on
				c.PresenceCoalesce = 20 * time.Millisecond
			}})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			dave := device(t, srv, "dave", "phone", nil)
			de := collect(dave)
			g, err := dave.CreateGroup(ctx, "g")
			if err != nil {
				t.Fatal(err)
			}
			alice := device(t, srv, "alice", "phone", nil)
			if _, err := alice.JoinGroup(ctx, g.Id); err != nil {
				t.Fatal(err)
			}
			if _, err := alice.SetPresence(ctx, true); err != nil {
				t.Fatal(err)
			}
			if !on {
				time.Sleep(500 * time.Millisecond)
				if ps := de.presences("alice"); len(ps) != 0 {
					t.Fatalf("without --presence-groups dave saw %v", ps)
				}
				return
			}
			waitFor(t, "dave sees alice away", 10*time.Second, func() bool {
				ps := de.presences("alice")
				return len(ps) > 0 && ps[len(ps)-1].State == qimpb.PresenceState_AWAY
			})
		})
	}
}

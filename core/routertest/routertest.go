// Package routertest is the conformance suite of core.Router: every router
// runs Run from its tests.
//
//	func TestConformance(t *testing.T) {
//		routertest.Run(t, func(t *testing.T, nodes int) []core.Router {
//			// nodes routers that route to each other, as the processes
//			// of one deployment do
//		})
//	}
//
// A router that carries events between processes delivers them
// asynchronously, so the suite waits for what must arrive (up to Wait) and
// watches for a moment (Quiet) that nothing else does.
package routertest

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/core"
	qimpb "github.com/qim-im/qim/proto"
)

// How long the suite waits for an event that must arrive, and watches for
// one that must not.
const (
	Wait  = 10 * time.Second
	Quiet = 200 * time.Millisecond
)

// Run runs the suite as subtests of t. open must return nodes routers
// that route to each other (for a router of one process, the same router
// nodes times), with nobody registered; Run stops nothing: open cleans up
// with t.Cleanup.
func Run(t *testing.T, open func(t *testing.T, nodes int) []core.Router) {
	for _, tt := range []struct {
		name string
		test func(t *testing.T, open func(t *testing.T, nodes int) []core.Router)
	}{
		{"EverySession", testEverySession},
		{"OnlyAddressed", testOnlyAddressed},
		{"Unregister", testUnregister},
		{"UserIDs", testUserIDs},
		{"EventFields", testEventFields},
		{"Concurrent", testConcurrent},
		{"ManyUsers", testManyUsers},
		{"Broadcast", testBroadcast},
		{"RemoteToListeners", testRemoteToListeners},
	} {
		t.Run(tt.name, func(t *testing.T) { tt.test(t, open) })
	}
}

// Receiver is a core.Receiver that records what it receives.
type Receiver struct {
	mu  sync.Mutex
	got []core.Event
}

// Receive implements core.Receiver.
func (r *Receiver) Receive(ev core.Event) {
	r.mu.Lock()
	r.got = append(r.got, ev)
	r.mu.Unlock()
}

// Events returns what r has received so far.
func (r *Receiver) Events() []core.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// texts returns the message texts r received, in order.
func (r *Receiver) texts() []string {
	var out []string
	for _, ev := range r.Events() {
		if ev.Msg != nil {
			out = append(out, string(ev.Msg.Payload))
		}
	}
	return out
}

// msg returns an event carrying a message with text as its payload.
func msg(text string) core.Event {
	return core.Event{Msg: &qimpb.Message{FromUser: "alice", ToUser: "bob", Type: qimpb.MessageType_TXT, Payload: []byte(text)}, Conv: "u:alice:bob"}
}

// waitTexts waits until r has received exactly want (in any order), then
// checks that nothing more arrives for Quiet.
func waitTexts(t *testing.T, name string, r *Receiver, want ...string) {
	t.Helper()
	waitAll(t, map[string]expect{name: {r, want}})
}

// expect is what one receiver must have received, in any order.
type expect struct {
	r    *Receiver
	want []string
}

// waitAll waits until every receiver has received exactly what it must,
// then checks that nothing more arrives at any of them for Quiet.
func waitAll(t *testing.T, all map[string]expect) {
	t.Helper()
	deadline := time.Now().Add(Wait)
	for name, e := range all {
		want := slices.Sorted(slices.Values(e.want))
		for {
			got := slices.Sorted(slices.Values(e.r.texts()))
			if slices.Equal(got, want) {
				break
			}
			if len(got) > len(want) || time.Now().After(deadline) {
				t.Fatalf("%s received %q, want %q", name, got, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	time.Sleep(Quiet)
	for name, e := range all {
		if got, want := slices.Sorted(slices.Values(e.r.texts())), slices.Sorted(slices.Values(e.want)); !slices.Equal(got, want) {
			t.Fatalf("%s received %q, want only %q", name, got, want)
		}
	}
}

// testEverySession: every session of a user, on any node, gets each event
// delivered from any node, once.
func testEverySession(t *testing.T, open func(t *testing.T, nodes int) []core.Router) {
	rs := open(t, 3)
	phone, laptop, tablet := new(Receiver), new(Receiver), new(Receiver)
	defer rs[0].Register("app", "bob", phone)()
	defer rs[1].Register("app", "bob", laptop)()
	defer rs[1].Register("app", "bob", tablet)()
	rs[2].Deliver("app", []string{"bob"}, msg("from node 2"))
	rs[1].Deliver("app", []string{"bob"}, msg("from node 1"))
	rs[0].Deliver("app", []string{"bob", "bob"}, msg("named twice"))
	// "named twice" may arrive twice (the users list had bob twice) or
	// once; a router need not de-duplicate its callers' lists.
	for name, r := range map[string]*Receiver{"phone": phone, "laptop": laptop, "tablet": tablet} {
		deadline := time.Now().Add(Wait)
		for {
			got := r.texts()
			if slices.Contains(got, "from node 2") && slices.Contains(got, "from node 1") && slices.Contains(got, "named twice") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s received %q", name, got)
			}
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(Quiet)
		got := r.texts()
		for _, text := range []string{"from node 2", "from node 1"} {
			if n := count(got, text); n != 1 {
				t.Errorf("%s received %q %d times, want once", name, text, n)
			}
		}
		if n := count(got, "named twice"); n < 1 || n > 2 {
			t.Errorf("%s received %q %d times", name, "named twice", n)
		}
	}
}

// testOnlyAddressed: an event reaches the users named, in the application
// named, and nobody else: not a user of the same name in another
// application, not a user whose id the named one is a prefix of.
func testOnlyAddressed(t *testing.T, open func(t *testing.T, nodes int) []core.Router) {
	rs := open(t, 2)
	bob, carol, otherApp, bobby := new(Receiver), new(Receiver), new(Receiver), new(Receiver)
	defer rs[0].Register("org/app", "bob", bob)()
	defer rs[1].Register("org/app", "carol", carol)()
	defer rs[1].Register("org/app2", "bob", otherApp)()
	defer rs[0].Register("org/app", "bobby", bobby)()
	rs[1].Deliver("org/app", []string{"bob", "dave"}, msg("to bob"))
	rs[0].Deliver("org/app", []string{"carol"}, msg("to carol"))
	rs[0].Deliver("org/app", nil, msg("to nobody"))
	waitAll(t, map[string]expect{
		"bob":                {bob, []string{"to bob"}},
		"carol":              {carol, []string{"to carol"}},
		"bob of another app": {otherApp, nil},
		"bobby":              {bobby, nil},
	})
}

// testUnregister: after unregister returns, the session gets nothing more
// (once what was in flight has arrived), and a second call is harmless.
func testUnregister(t *testing.T, open func(t *testing.T, nodes int) []core.Router) {
	rs := open(t, 2)
	stays, goes := new(Receiver), new(Receiver)
	defer rs[0].Register("app", "bob", stays)()
	unregister := rs[1].Register("app", "bob", goes)
	rs[0].Deliver("app", []string{"bob"}, msg("before"))
	waitTexts(t, "the session that goes", goes, "before")
	unregister()
	unregister()
	rs[0].Deliver("app", []string{"bob"}, msg("after"))
	rs[1].Deliver("app", []string{"bob"}, msg("after, from its node"))
	waitTexts(t, "the session that stays", stays, "before", "after", "after, from its node")
	waitTexts(t, "the unregistered session", goes, "before")
	// Registering again works.
	again := new(Receiver)
	defer rs[1].Register("app", "bob", again)()
	rs[0].Deliver("app", []string{"bob"}, msg("again"))
	waitTexts(t, "the session registered again", again, "again")
}

// testUserIDs: every character a user id may hold (auth.ValidID: letters,
// digits, '.', '_', '@', '-') routes to that user only, whatever the
// router's own addressing treats specially.
func testUserIDs(t *testing.T, open func(t *testing.T, nodes int) []core.Router) {
	rs := open(t, 2)
	ids := []string{"a", "a.b", "a_b", "a@b", "a-b", "a.b.c", "A", "a..b", ".a", "a.", "_", "@", "-", "a@b.example.com"}
	rcv := make(map[string]*Receiver)
	for i, id := range ids {
		rcv[id] = new(Receiver)
		defer rs[i%2].Register("org/app.x", id, rcv[id])()
	}
	for i, id := range ids {
		rs[(i+1)%2].Deliver("org/app.x", []string{id}, msg("to "+id))
	}
	all := make(map[string]expect)
	for _, id := range ids {
		all[fmt.Sprintf("user %q", id)] = expect{rcv[id], []string{"to " + id}}
	}
	waitAll(t, all)
}

// testEventFields: what an event carries arrives intact, whichever node
// delivers it (Frame, a process-local optimisation, may be dropped).
func testEventFields(t *testing.T, open func(t *testing.T, nodes int) []core.Router) {
	rs := open(t, 2)
	r := new(Receiver)
	defer rs[0].Register("app", "bob", r)()
	m := &qimpb.Message{Id: 7, Seq: 3, Timestamp: 1700000000123, FromUser: "alice", FromDevice: "phone", ToGroup: "g1",
		Type: qimpb.MessageType_IMAGE, Payload: []byte("https://example.com/a.png"), ClientMsgId: "c\x00d"}
	read := time.UnixMilli(1700000000100)
	sent := []core.Event{
		{Msg: m, Conv: "g:g1", Read: read},
		{Revoke: "g:g1"},
		{ReplaceDevice: "phone", ReplaceEpoch: 42},
		{EndSessions: "logged out"},
	}
	for _, ev := range sent {
		rs[1].Deliver("app", []string{"bob"}, ev)
	}
	deadline := time.Now().Add(Wait)
	for len(r.Events()) < len(sent) {
		if time.Now().After(deadline) {
			t.Fatalf("received %d of %d events", len(r.Events()), len(sent))
		}
		time.Sleep(5 * time.Millisecond)
	}
	got := r.Events()
	var gotMsg, gotRevoke, gotReplace, gotEnd bool
	for _, ev := range got {
		switch {
		case ev.Msg != nil:
			gotMsg = true
			if !proto.Equal(ev.Msg, m) || ev.Conv != "g:g1" || (!ev.Read.IsZero() && !ev.Read.Equal(read)) {
				t.Errorf("message event arrived as %+v, want %+v", ev, sent[0])
			}
		case ev.Revoke != "":
			gotRevoke = ev.Revoke == "g:g1"
		case ev.ReplaceDevice != "":
			gotReplace = ev.ReplaceDevice == "phone" && ev.ReplaceEpoch == 42
		case ev.EndSessions != "":
			gotEnd = ev.EndSessions == "logged out"
		}
	}
	if !gotMsg || !gotRevoke || !gotReplace || !gotEnd {
		t.Errorf("received %+v, want the message, the revocation, the replacement and the end of sessions", got)
	}
}

// testConcurrent: registrations, unregistrations and deliveries from many
// goroutines on every node at once (run it with -race); a session
// registered throughout gets every event.
func testConcurrent(t *testing.T, open func(t *testing.T, nodes int) []core.Router) {
	rs := open(t, 2)
	steady := new(Receiver)
	defer rs[0].Register("app", "bob", steady)()
	const goroutines, rounds = 8, 100
	var wg sync.WaitGroup
	var want []string
	for g := range goroutines {
		for i := range rounds {
			want = append(want, fmt.Sprintf("g%d-%d", g, i))
		}
		wg.Go(func() {
			r := rs[g%len(rs)]
			for i := range rounds {
				unregister := r.Register("app", "bob", new(Receiver))
				r.Deliver("app", []string{"bob", "carol"}, msg(fmt.Sprintf("g%d-%d", g, i)))
				unregister()
			}
		})
	}
	wg.Wait()
	waitTexts(t, "the steady session", steady, want...)
}

func count(s []string, v string) int {
	n := 0
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}

// Listener is a core.Listener that records what it hears.
type Listener struct {
	mu     sync.Mutex
	got    []core.Event
	apps   []string
	missed int
}

// ReceiveNode implements core.Listener.
func (l *Listener) ReceiveNode(app string, ev core.Event) {
	l.mu.Lock()
	l.got = append(l.got, ev)
	l.apps = append(l.apps, app)
	l.mu.Unlock()
}

// Missed implements core.Listener.
func (l *Listener) Missed() {
	l.mu.Lock()
	l.missed++
	l.mu.Unlock()
}

// Events returns what l has heard so far, and the apps they came with.
func (l *Listener) Events() ([]core.Event, []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.got), slices.Clone(l.apps)
}

// MissedCount returns how many times Missed was called.
func (l *Listener) MissedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.missed
}

// groups returns the Group fields of the events l heard.
func (l *Listener) groups() []string {
	evs, _ := l.Events()
	var out []string
	for _, ev := range evs {
		if ev.Group != "" {
			out = append(out, ev.Group)
		}
	}
	return out
}

// distinct reports whether the routers are distinct nodes (a router of one
// process is opened as the same router several times).
func distinct(rs []core.Router) bool {
	for i := range rs {
		for j := range i {
			if rs[i] == rs[j] {
				return false
			}
		}
	}
	return true
}

// testBroadcast: a broadcast reaches the listeners of every node, the
// sender's included, once each, with its app and fields intact; a
// listener removed hears nothing more.
func testBroadcast(t *testing.T, open func(t *testing.T, nodes int) []core.Router) {
	rs := open(t, 3)
	var ls []*Listener
	var stops []func()
	for _, r := range rs {
		l := new(Listener)
		ls = append(ls, l)
		stops = append(stops, r.Listen(l))
	}
	if !distinct(rs) {
		// One process: one listener is enough to check.
		for _, stop := range stops[1:] {
			stop()
		}
		ls, stops = ls[:1], stops[:1]
	}
	rs[1].Broadcast("org/app.x", core.Event{Group: "g.1@x"})
	deadline := time.Now().Add(Wait)
	for i, l := range ls {
		for len(l.groups()) < 1 {
			if time.Now().After(deadline) {
				t.Fatalf("listener of node %d heard nothing", i)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	time.Sleep(Quiet)
	for i, l := range ls {
		evs, apps := l.Events()
		if len(evs) != 1 || evs[0].Group != "g.1@x" || apps[0] != "org/app.x" {
			t.Fatalf("listener of node %d heard %+v in %q, want one event of group g.1@x in org/app.x", i, evs, apps)
		}
	}
	stops[0]()
	rs[len(rs)-1].Broadcast("app", core.Event{Group: "g2"})
	time.Sleep(Quiet)
	if evs, _ := ls[0].Events(); len(evs) != 1 {
		t.Fatalf("a removed listener heard %+v", evs)
	}
	for _, stop := range stops[1:] {
		stop()
	}
}

// testRemoteToListeners: an event delivered from another node to a session
// of this node reaches this node's listeners too (so that its hub sees
// other nodes' messages); one delivered within a node, or to a node with
// no addressed session, does not.
func testRemoteToListeners(t *testing.T, open func(t *testing.T, nodes int) []core.Router) {
	rs := open(t, 2)
	l0, l1 := new(Listener), new(Listener)
	defer rs[0].Listen(l0)()
	if !distinct(rs) {
		rs[0].Deliver("app", []string{"bob"}, msg("local"))
		time.Sleep(Quiet)
		if evs, _ := l0.Events(); len(evs) != 0 {
			t.Fatalf("a local delivery reached the listener: %+v", evs)
		}
		return
	}
	defer rs[1].Listen(l1)()
	bob := new(Receiver)
	defer rs[1].Register("app", "bob", bob)()
	rs[0].Deliver("app", []string{"bob"}, msg("remote"))
	rs[1].Deliver("app", []string{"bob"}, msg("local"))
	waitTexts(t, "bob", bob, "remote", "local")
	evs, _ := l1.Events()
	if len(evs) != 1 || evs[0].Msg == nil || string(evs[0].Msg.Payload) != "remote" {
		t.Fatalf("listener of bob's node heard %+v, want the remote message only", evs)
	}
	if evs, _ := l0.Events(); len(evs) != 0 {
		t.Fatalf("listener of the sending node heard %+v", evs)
	}
}

// testManyUsers: a delivery to many users at once (a big group's members,
// which a router may send differently from a delivery to one or two)
// reaches every session of each of them on every node once, and nobody
// else.
func testManyUsers(t *testing.T, open func(t *testing.T, nodes int) []core.Router) {
	rs := open(t, 3)
	const n = 60
	var users []string
	all := make(map[string]expect)
	for i := range n {
		u := fmt.Sprintf("m%02d.x@y", i)
		users = append(users, u)
		r := new(Receiver)
		defer rs[i%len(rs)].Register("app", u, r)()
		all[u] = expect{r, []string{"to all"}}
	}
	outsider := new(Receiver)
	defer rs[1].Register("app", "outsider", outsider)()
	all["outsider"] = expect{outsider, nil}
	rs[0].Deliver("app", users, msg("to all"))
	waitAll(t, all)
}

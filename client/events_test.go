package client_test

import (
	"bufio"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/client"
	qimpb "github.com/qim-im/qim/proto"
)

var allFeatures = []qimpb.Feature{qimpb.Feature_FEATURE_RECEIPTS, qimpb.Feature_FEATURE_TYPING,
	qimpb.Feature_FEATURE_PRESENCE, qimpb.Feature_FEATURE_INBOX, qimpb.Feature_FEATURE_DATAGRAMS}

// connected is the Connected of a server that grants features.
func connected(features ...qimpb.Feature) *qimpb.Connected {
	return &qimpb.Connected{User: "alice", Device: "phone", MaxFrame: qimpb.DefaultMaxFrame, Features: features}
}

// event writes ev on the control stream as an EVENT frame.
func (fc *fakeConn) event(ev *qimpb.Event) {
	fc.t.Helper()
	fc.write(fc.ctl, qimpb.CommandType_EVENT, ev)
}

// nextEvent returns the next event of c.
func nextEvent(t *testing.T, c *client.Client) *qimpb.Event {
	t.Helper()
	select {
	case ev, ok := <-c.Events():
		if !ok {
			t.Fatalf("Events closed: %v", c.Err())
		}
		return ev
	case <-time.After(waitTime):
		t.Fatal("no event")
		return nil
	}
}

// wantEvent checks that the next event of c is want.
func wantEvent(t *testing.T, c *client.Client, want *qimpb.Event) {
	t.Helper()
	if got := nextEvent(t, c); !proto.Equal(got, want) {
		t.Fatalf("event %v, want %v", got, want)
	}
}

func TestFakeFeatures(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  func(*client.Config)
		want []qimpb.Feature
	}{
		{"default", func(*client.Config) {}, allFeatures},
		{"no events", func(cfg *client.Config) { cfg.NoEvents = true; cfg.Features = allFeatures }, nil},
		{"send only", func(cfg *client.Config) { cfg.SendOnly = true }, nil},
		{"chosen", func(cfg *client.Config) { cfg.Features = []qimpb.Feature{qimpb.Feature_FEATURE_INBOX} },
			[]qimpb.Feature{qimpb.Feature_FEATURE_INBOX}},
		{"no datagrams", func(cfg *client.Config) { cfg.QUICConfig = &quic.Config{} }, allFeatures[:4]},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fs := startFake(t)
			base := fs.clientTLS
			fs.clientTLS = func() client.Config {
				cfg := base()
				tt.cfg(&cfg)
				return cfg
			}
			_, _, cn := fs.connectWith(t, connected())
			if !slices.Equal(cn.GetFeatures(), tt.want) {
				t.Fatalf("CONNECT asks for %v, want %v", cn.GetFeatures(), tt.want)
			}
		})
	}
}

// TestFakeEvents checks that events on the control stream and in datagrams
// reach Events, that receipts never go backwards from the inbox of
// Connected on, that presence never goes back in time, and that events of
// unknown kinds or that do not decode are ignored.
func TestFakeEvents(t *testing.T) {
	cd := connected(allFeatures...)
	cd.Inbox = &qimpb.InboxResult{Conversations: []*qimpb.ConversationState{
		{ToGroup: "g1", LastSeq: 9, ReadSeq: 4, Unread: 5},
		{ToUser: "bob", LastSeq: 5, ReadSeq: 2, Unread: 3, PeerDelivered: 3, PeerRead: 1},
	}}
	c, fc, _ := startFake(t).connectWith(t, cd)
	if !c.Granted(qimpb.Feature_FEATURE_TYPING) || c.Granted(qimpb.Feature_FEATURE_UNSPECIFIED) {
		t.Fatalf("Granted: features %v", c.Connected().GetFeatures())
	}
	receipt := func(user, toUser, toGroup string, delivered, read, private uint64) *qimpb.Event {
		return &qimpb.Event{Receipt: &qimpb.Receipt{User: user, ToUser: toUser, ToGroup: toGroup,
			Delivered: delivered, Read: read, ReadPrivate: private}}
	}
	presence := func(user string, state qimpb.PresenceState, since int64) *qimpb.Event {
		return &qimpb.Event{Presence: &qimpb.Presence{User: user, State: state, LastSeen: since, Since: since}}
	}
	typing := &qimpb.Event{Typing: &qimpb.Typing{FromUser: "bob", ToUser: "bob", Active: true, TtlMs: 6000}}

	for _, step := range []struct {
		name string
		send []*qimpb.Event
		want *qimpb.Event // the event that comes out of those; nil: none
	}{
		{"behind the inbox", []*qimpb.Event{receipt("bob", "bob", "", 2, 1, 0)}, nil},
		{"delivered moves", []*qimpb.Event{receipt("bob", "bob", "", 5, 0, 0)}, receipt("bob", "bob", "", 5, 1, 0)},
		{"read moves, delivered behind", []*qimpb.Event{receipt("bob", "bob", "", 4, 4, 0)}, receipt("bob", "bob", "", 5, 4, 0)},
		{"nothing moves", []*qimpb.Event{receipt("bob", "bob", "", 5, 3, 0)}, nil},
		{"own read behind", []*qimpb.Event{receipt("alice", "bob", "", 0, 0, 2), receipt("alice", "", "g1", 0, 0, 4)}, nil},
		{"own read moves", []*qimpb.Event{receipt("alice", "", "g1", 0, 0, 6)}, receipt("alice", "", "g1", 0, 0, 6)},
		{"no conversation", []*qimpb.Event{receipt("bob", "bob", "g1", 9, 9, 0), receipt("bob", "", "", 9, 9, 0)}, nil},
		{"presence", []*qimpb.Event{presence("carol", qimpb.PresenceState_ONLINE, 100)}, presence("carol", qimpb.PresenceState_ONLINE, 100)},
		{"older presence", []*qimpb.Event{presence("carol", qimpb.PresenceState_OFFLINE, 50)}, nil},
		{"same presence", []*qimpb.Event{presence("carol", qimpb.PresenceState_ONLINE, 100)}, nil},
		{"newer presence", []*qimpb.Event{presence("carol", qimpb.PresenceState_AWAY, 200)}, presence("carol", qimpb.PresenceState_AWAY, 200)},
		{"unknown kind", []*qimpb.Event{{}}, nil},
		{"typing", []*qimpb.Event{typing}, typing},
		{"receipt count", []*qimpb.Event{{ReceiptCount: &qimpb.ReceiptCount{GroupId: "g1", Seq: 3, Members: 4, Delivered: 2, Read: 1}}},
			&qimpb.Event{ReceiptCount: &qimpb.ReceiptCount{GroupId: "g1", Seq: 3, Members: 4, Delivered: 2, Read: 1}}},
	} {
		for _, ev := range step.send {
			fc.event(ev)
		}
		// The control stream is in order: a marker event that always
		// passes shows what the steps' events let through.
		marker := &qimpb.Event{Typing: &qimpb.Typing{FromUser: "marker", ToUser: "marker"}}
		fc.event(marker)
		if step.want != nil {
			if got := nextEvent(t, c); !proto.Equal(got, step.want) {
				t.Fatalf("%s: event %v, want %v", step.name, got, step.want)
			}
		}
		if got := nextEvent(t, c); !proto.Equal(got, marker) {
			t.Fatalf("%s: event %v, want nothing before the marker", step.name, got)
		}
	}

	// An EVENT of a kind added later (field 99), and EVENTs that do not
	// decode, are ignored, and the session goes on.
	for _, payload := range [][]byte{{0x98, 0x06, 0x01}, {0xff, 0xff}, {0x1a, 0x01, 0xff}} {
		b, err := proto.Marshal(&qimpb.Command{Version: qimpb.Version, Command: qimpb.CommandType_EVENT, Payload: payload})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fc.ctl.Write(append([]byte{byte(len(b))}, b...)); err != nil {
			t.Fatal(err)
		}
	}
	fc.event(typing)
	wantEvent(t, c, typing)

	// Datagrams: an encoded EVENT Command each; anything else is ignored.
	dgram := func(ct qimpb.CommandType, ev *qimpb.Event) []byte {
		payload, err := proto.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		b, err := proto.Marshal(&qimpb.Command{Version: qimpb.Version, Command: ct, Payload: payload})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, b := range [][]byte{
		make([]byte, 64), // a keepalive
		dgram(qimpb.CommandType_REQUEST, typing),
		dgram(qimpb.CommandType_EVENT, &qimpb.Event{Typing: &qimpb.Typing{FromUser: "carol", ToGroup: "g1", Active: true}}),
	} {
		if err := fc.qc.SendDatagram(b); err != nil {
			t.Fatal(err)
		}
	}
	wantEvent(t, c, &qimpb.Event{Typing: &qimpb.Typing{FromUser: "carol", ToGroup: "g1", Active: true}})
	if n := c.EventsDropped(); n != 0 {
		t.Fatalf("EventsDropped = %d", n)
	}
	if c.Err() != nil {
		t.Fatalf("session ended: %v", c.Err())
	}
}

// TestFakeEventsNeverBlock checks that a program that does not read Events
// holds up nothing: the events beyond the channel's capacity are dropped
// and counted, and a DISCONNECT behind them is read at once.
func TestFakeEventsNeverBlock(t *testing.T) {
	fs := startFake(t)
	base := fs.clientTLS
	fs.clientTLS = func() client.Config {
		cfg := base()
		cfg.EventQueue = 2
		return cfg
	}
	c, fc, _ := fs.connectWith(t, connected(allFeatures...))
	for i := range 10 {
		fc.event(&qimpb.Event{Typing: &qimpb.Typing{FromUser: "bob", ToUser: "bob", Active: i%2 == 0}})
	}
	fc.write(fc.ctl, qimpb.CommandType_DISCONNECT, &qimpb.Disconnect{Code: int32(qimpb.Code_REPLACED)})
	select {
	case <-c.Done():
	case <-time.After(waitTime):
		t.Fatal("DISCONNECT behind unread events was not read")
	}
	if n := c.EventsDropped(); n != 8 {
		t.Fatalf("EventsDropped = %d, want 8", n)
	}
	var got int
	for range c.Events() { // closed with the session
		got++
	}
	if got != 2 {
		t.Fatalf("%d events kept, want 2", got)
	}
}

// TestFakeTyping checks that Typing goes in a datagram, a bare Command,
// when the server granted FEATURE_DATAGRAMS, and as a request otherwise.
func TestFakeTyping(t *testing.T) {
	t.Run("datagram", func(t *testing.T) {
		c, fc, _ := startFake(t).connectWith(t, connected(allFeatures...))
		for _, active := range []bool{true, false} {
			if err := c.Typing(ctxT(t), client.ToGroup("g1"), active); err != nil {
				t.Fatal(err)
			}
			var got qimpb.Typing
			for {
				b, err := fc.qc.ReceiveDatagram(ctxT(t))
				if err != nil {
					t.Fatal(err)
				}
				var cmd qimpb.Command
				var req qimpb.Request
				if proto.Unmarshal(b, &cmd) != nil {
					continue // a keepalive
				}
				if cmd.GetVersion() != qimpb.Version || cmd.GetCommand() != qimpb.CommandType_REQUEST ||
					proto.Unmarshal(cmd.GetPayload(), &req) != nil || req.GetType() != qimpb.RequestType_TYPING ||
					proto.Unmarshal(req.GetPayload(), &got) != nil {
					t.Fatalf("datagram %x is not a TYPING request", b)
				}
				break
			}
			if got.GetToGroup() != "g1" || got.GetToUser() != "" || got.GetActive() != active {
				t.Fatalf("typing %v, want active %v in g1", &got, active)
			}
		}
	})
	t.Run("request", func(t *testing.T) {
		// Datagrams enabled on both sides, but not granted: a server that
		// would discard them.
		c, fc, _ := startFake(t).connectWith(t, connected(qimpb.Feature_FEATURE_TYPING))
		done := async(func() error { return c.Typing(ctxT(t), client.ToUser("bob"), true) })
		s, r := fc.acceptStream()
		var got qimpb.Typing
		req := fc.readRequest(r, &got)
		if req.GetType() != qimpb.RequestType_TYPING || got.GetToUser() != "bob" || !got.GetActive() {
			t.Fatalf("request %v, typing %v", req, &got)
		}
		fc.write(s, qimpb.CommandType_RESPONSE, &qimpb.Response{Code: int32(qimpb.Code_RATE_LIMITED), RequestId: req.GetRequestId()})
		if err := wait(t, done); !errors.Is(err, &client.Error{Code: qimpb.Code_RATE_LIMITED}) {
			t.Fatalf("Typing: %v", err)
		}
		if err := c.Typing(ctxT(t), client.Peer{}, true); err == nil {
			t.Fatal("Typing to no conversation succeeded")
		}
	})
}

// TestFakeRequests checks the requests of section 11 on the wire and what
// the client makes of their answers.
func TestFakeRequests(t *testing.T) {
	c, fc, _ := startFake(t).connectWith(t, connected(allFeatures...))
	var s *quic.Stream
	var r *bufio.Reader
	// serve answers the next request, which must be of type typ with
	// payload want (nil: none), with answer.
	serve := func(typ qimpb.RequestType, want, answer proto.Message) <-chan struct{} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			if s == nil {
				s, r = fc.acceptStream()
			}
			cmd := fc.read(r)
			var req qimpb.Request
			if cmd.GetCommand() != qimpb.CommandType_REQUEST || proto.Unmarshal(cmd.GetPayload(), &req) != nil {
				t.Errorf("got %v, want a REQUEST", cmd)
				return
			}
			if req.GetType() != typ {
				t.Errorf("request of type %v, want %v", req.GetType(), typ)
			}
			if want == nil {
				if len(req.GetPayload()) != 0 {
					t.Errorf("%v request has a payload", typ)
				}
			} else {
				got := want.ProtoReflect().New().Interface()
				if err := proto.Unmarshal(req.GetPayload(), got); err != nil {
					t.Errorf("%v payload: %v", typ, err)
				} else if !proto.Equal(got, want) {
					t.Errorf("%v payload %v, want %v", typ, got, want)
				}
			}
			fc.respond(s, req.GetRequestId(), qimpb.Code_OK, answer)
		}()
		return done
	}
	check := func(done <-chan struct{}, err error, got, want proto.Message) {
		t.Helper()
		<-done
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, want) {
			t.Fatalf("got %v, want %v", got, want)
		}
	}

	done := serve(qimpb.RequestType_READ, &qimpb.ReadRequest{ToUser: "bob", Seq: 7}, &qimpb.ReadResult{ReadSeq: 7, Unread: 2})
	rr, err := c.Read(ctxT(t), client.ToUser("bob"), 7)
	check(done, err, rr, &qimpb.ReadResult{ReadSeq: 7, Unread: 2})
	// What the answer said is known: an event that says no more is dropped.
	marker := &qimpb.Event{Typing: &qimpb.Typing{FromUser: "marker", ToUser: "marker"}}
	fc.event(&qimpb.Event{Receipt: &qimpb.Receipt{User: "alice", ToUser: "bob", ReadPrivate: 7}})
	fc.event(marker)
	wantEvent(t, c, marker)

	inbox := []*qimpb.ConversationState{{ToUser: "bob", LastSeq: 9, ReadSeq: 7, Unread: 2, PeerDelivered: 9, PeerRead: 8}}
	done = serve(qimpb.RequestType_INBOX, nil, &qimpb.InboxResult{Conversations: inbox})
	convs, err := c.Inbox(ctxT(t))
	check(done, err, &qimpb.InboxResult{Conversations: convs}, &qimpb.InboxResult{Conversations: inbox})

	done = serve(qimpb.RequestType_SETTINGS, &qimpb.Settings{HideReadReceipts: true}, &qimpb.Settings{HideReadReceipts: true})
	st, err := c.SetSettings(ctxT(t), &qimpb.Settings{HideReadReceipts: true})
	check(done, err, st, &qimpb.Settings{HideReadReceipts: true})

	done = serve(qimpb.RequestType_PRESENCE, &qimpb.PresenceRequest{State: qimpb.PresenceState_AWAY},
		&qimpb.Presence{User: "alice", State: qimpb.PresenceState_AWAY, Since: 5})
	p, err := c.SetPresence(ctxT(t), true)
	check(done, err, p, &qimpb.Presence{User: "alice", State: qimpb.PresenceState_AWAY, Since: 5})

	done = serve(qimpb.RequestType_PRESENCE, &qimpb.PresenceRequest{State: qimpb.PresenceState_ONLINE},
		&qimpb.Presence{User: "alice", State: qimpb.PresenceState_ONLINE, Since: 6})
	p, err = c.SetPresence(ctxT(t), false)
	check(done, err, p, &qimpb.Presence{User: "alice", State: qimpb.PresenceState_ONLINE, Since: 6})

	gr := &qimpb.GroupResult{Count: &qimpb.ReceiptCount{GroupId: "g1", Seq: 3, Members: 2, Delivered: 1},
		Receipts: []*qimpb.Receipt{{User: "carol", ToGroup: "g1", Delivered: 3}}, NextUser: "carol"}
	done = serve(qimpb.RequestType_GROUP, &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_RECEIPTS, GroupId: "g1", Seq: 3,
		AfterUser: "bob", Limit: 1, Watch: true}, gr)
	res, err := c.GroupReceipts(ctxT(t), "g1", 3, "bob", 1, true)
	check(done, err, res, gr)

	carol := &qimpb.Presence{User: "carol", State: qimpb.PresenceState_ONLINE, Since: 10}
	done = serve(qimpb.RequestType_CONTACT, &qimpb.ContactRequest{Op: qimpb.ContactOp_CONTACT_LIST},
		&qimpb.ContactResult{Users: []string{"bob", "carol"}, Presence: []*qimpb.Presence{carol}})
	users, shown, err := c.ContactsPresence(ctxT(t))
	if len(shown) != 1 {
		t.Fatalf("presence of %v", shown)
	}
	check(done, err, &qimpb.ContactResult{Users: users, Presence: []*qimpb.Presence{shown["carol"]}},
		&qimpb.ContactResult{Users: []string{"bob", "carol"}, Presence: []*qimpb.Presence{carol}})

	// So are those that say no more than the other answers.
	for _, ev := range []*qimpb.Event{
		{Receipt: &qimpb.Receipt{User: "bob", ToUser: "bob", Delivered: 9, Read: 8}}, // Inbox
		{Presence: carol}, // ContactsPresence
		marker,
	} {
		fc.event(ev)
	}
	wantEvent(t, c, marker)
}

// TestFakeReconnectEvents checks what a reconnection brings: the same
// features asked again, a Receipt event for each conversation whose state
// in the new inbox moved, and presence AWAY said again.
func TestFakeReconnectEvents(t *testing.T) {
	fs := startFake(t)
	base := fs.clientTLS
	fs.clientTLS = func() client.Config {
		cfg := base()
		cfg.Reconnect = true
		cfg.ReconnectMin = time.Millisecond
		return cfg
	}
	cd := connected(allFeatures...)
	cd.Inbox = &qimpb.InboxResult{Conversations: []*qimpb.ConversationState{
		{ToGroup: "g1", LastSeq: 9, ReadSeq: 4},
		{ToUser: "bob", LastSeq: 5, ReadSeq: 2, PeerDelivered: 3, PeerRead: 1},
		{ToUser: "carol", LastSeq: 5, ReadSeq: 5, PeerDelivered: 5, PeerRead: 5},
	}}
	c, fc, _ := fs.connectWith(t, cd)
	select {
	case ev := <-c.Events():
		t.Fatalf("event %v after Dial: the first inbox is Connected's", ev)
	default:
	}
	done := async(func() error {
		_, err := c.SetPresence(ctxT(t), true)
		return err
	})
	s, r := fc.acceptStream()
	req := fc.readRequest(r, new(qimpb.PresenceRequest))
	fc.respond(s, req.GetRequestId(), qimpb.Code_OK, &qimpb.Presence{User: "alice", State: qimpb.PresenceState_AWAY})
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}

	fc.qc.CloseWithError(quic.ApplicationErrorCode(qimpb.Code_INTERNAL), "crash")
	fc2 := fs.accept(t)
	t.Cleanup(func() { fc2.qc.CloseWithError(quic.ApplicationErrorCode(qimpb.Code_CLOSED), "test over") })
	var cn qimpb.Connect
	if cmd := fc2.read(fc2.ctlR); proto.Unmarshal(cmd.GetPayload(), &cn) != nil || !slices.Equal(cn.GetFeatures(), allFeatures) {
		t.Fatalf("CONNECT again asks for %v", cn.GetFeatures())
	}
	cd.Inbox = &qimpb.InboxResult{Conversations: []*qimpb.ConversationState{
		{ToGroup: "g1", LastSeq: 9, ReadSeq: 6},                                  // read on another device
		{ToUser: "bob", LastSeq: 5, ReadSeq: 2, PeerDelivered: 2, PeerRead: 2},   // read moved, delivered re-learnt lower
		{ToUser: "carol", LastSeq: 5, ReadSeq: 5, PeerDelivered: 5, PeerRead: 5}, // nothing moved
	}}
	fc2.respond(fc2.ctl, 0, qimpb.Code_OK, cd)

	got := map[string]*qimpb.Receipt{}
	for range 2 {
		r := nextEvent(t, c).GetReceipt()
		got[r.GetUser()+"@"+r.GetToUser()+r.GetToGroup()] = r
	}
	want := map[string]*qimpb.Receipt{
		"alice@g1": {User: "alice", ToGroup: "g1", ReadPrivate: 6},
		"bob@bob":  {User: "bob", ToUser: "bob", Delivered: 3, Read: 2},
	}
	for k, r := range want {
		if !proto.Equal(got[k], r) {
			t.Fatalf("receipts after reconnecting: %v, want %v", got, want)
		}
	}

	// The program said away: the new connection is told so.
	s, r = fc2.acceptStream()
	var pr qimpb.PresenceRequest
	req = fc2.readRequest(r, &pr)
	if req.GetType() != qimpb.RequestType_PRESENCE || pr.GetState() != qimpb.PresenceState_AWAY {
		t.Fatalf("after reconnecting: %v %v", req, &pr)
	}
	fc2.respond(s, req.GetRequestId(), qimpb.Code_OK, &qimpb.Presence{User: "alice", State: qimpb.PresenceState_AWAY})
	select {
	case ev := <-c.Events():
		t.Fatalf("unexpected event %v", ev)
	case <-time.After(100 * time.Millisecond):
	}
}

package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
)

// TestPrinter checks the text lines of receipts, typing and presence.
func TestPrinter(t *testing.T) {
	now := time.Date(2026, 12, 3, 18, 30, 0, 0, time.UTC)
	ms := func(tm time.Time) int64 { return tm.UnixMilli() }
	receipt := func(user, toUser, toGroup string, delivered, read, private uint64) *qimpb.Event {
		return &qimpb.Event{Receipt: &qimpb.Receipt{User: user, ToUser: toUser, ToGroup: toGroup,
			Delivered: delivered, Read: read, ReadPrivate: private}}
	}
	typing := func(from string, active bool, ttl uint32) *qimpb.Event {
		return &qimpb.Event{Typing: &qimpb.Typing{FromUser: from, ToUser: from, Active: active, TtlMs: ttl}}
	}
	presence := func(state qimpb.PresenceState, lastSeen time.Time) *qimpb.Event {
		p := &qimpb.Presence{User: "bob", State: state, Since: ms(now)}
		if !lastSeen.IsZero() {
			p.LastSeen = ms(lastSeen)
		}
		return &qimpb.Event{Presence: p}
	}
	msg := &qimpb.Message{FromUser: "bob", ToUser: "alice", Seq: 9, Payload: mustTxt(t, "yo")}
	// Each step: a message, an event, or a time to expire "typing…" at.
	type step struct {
		ev     *qimpb.Event
		m      *qimpb.Message
		expire time.Duration
	}
	for _, tt := range []struct {
		name  string
		sent  map[uint64]string // messages alice sent to bob before
		steps []step
		want  string
	}{
		{"none of the user's", nil, []step{
			{ev: receipt("bob", "bob", "", 5, 4, 0)},
			{ev: receipt("alice", "bob", "", 0, 0, 6)},
			{ev: receipt("alice", "bob", "", 0, 0, 5)}, // behind: nothing
			{ev: receipt("carol", "", "g1", 3, 0, 0)},
		}, "[@bob] read up to #6 on another device\n"},
		{"ticks", map[uint64]string{4: "one", 6: "two"}, []step{
			{ev: receipt("bob", "bob", "", 2, 1, 0)}, // behind the inbox: nothing
			{ev: receipt("bob", "bob", "", 6, 1, 0)},
			{ev: receipt("bob", "bob", "", 6, 5, 0)},
			{m: &qimpb.Message{FromUser: "alice", FromDevice: "laptop", ToUser: "bob", Seq: 8, Payload: mustTxt(t, "three")}},
			{ev: receipt("bob", "bob", "", 0, 6, 0)}, // delivered not said: not gone back
			{ev: receipt("bob", "bob", "", 6, 6, 0)},
			{ev: receipt("bob", "bob", "", 9, 9, 0)},
		}, "[@bob] alice: one (#4) ✓\n" +
			"[@bob] alice: two (#6) ✓\n" +
			"[@bob] alice: one (#4) ✓✓\n" +
			"[@bob] alice: three (#8)\n" +
			"[@bob] alice: two (#6) ✓✓\n" +
			"[@bob] alice: three (#8) ✓\n" +
			"[@bob] alice: three (#8) ✓✓\n"},
		{"the user's own cursors", map[uint64]string{4: "one"}, []step{
			{ev: receipt("alice", "bob", "", 5, 5, 7)},
		}, "[@bob] read up to #7 on another device\n"},
		{"receipt count", nil, []step{
			{ev: &qimpb.Event{ReceiptCount: &qimpb.ReceiptCount{GroupId: "g1", Seq: 5, Members: 4, Delivered: 3, Read: 1}}},
		}, "[#g1] #5 delivered to 3 of 4, read by 1\n"},
		{"typing ends", nil, []step{
			{ev: typing("bob", true, 6000)},
			{ev: typing("bob", true, 6000)}, // a renewal: nothing
			{ev: typing("bob", false, 0)},   // a message may follow
			{expire: 999 * time.Millisecond},
			{expire: time.Second},
			{ev: typing("bob", false, 0)}, // not shown: nothing
		}, "[@bob] bob is typing…\n[@bob] bob stopped typing\n"},
		{"typing stops, then a message", nil, []step{
			{ev: typing("bob", true, 6000)},
			{ev: typing("bob", false, 0)},
			{m: msg},
			{expire: time.Hour},
		}, "[@bob] bob is typing…\n[@bob] bob: yo (#9)\n"},
		{"typing ended by a message", nil, []step{
			{ev: typing("bob", true, 6000)},
			{m: msg},
			{expire: time.Hour},
		}, "[@bob] bob is typing…\n[@bob] bob: yo (#9)\n"},
		{"typing expires", nil, []step{
			{ev: typing("bob", true, 2000)},
			{expire: 1999 * time.Millisecond},
			{ev: &qimpb.Event{Typing: &qimpb.Typing{FromUser: "carol", ToGroup: "g1", Active: true}}}, // 6 s by default
			{expire: 2 * time.Second},
			{expire: 6 * time.Second},
			{expire: time.Hour},
		}, "[@bob] bob is typing…\n[#g1] carol is typing…\n[@bob] bob stopped typing\n[#g1] carol stopped typing\n"},
		{"presence", nil, []step{
			{ev: presence(qimpb.PresenceState_ONLINE, time.Time{})},
			{ev: presence(qimpb.PresenceState_AWAY, now)},
			{ev: presence(qimpb.PresenceState_OFFLINE, now.Add(-time.Hour))},
			{ev: presence(qimpb.PresenceState_OFFLINE, now.Add(-24*time.Hour))},
			{ev: presence(qimpb.PresenceState_OFFLINE, time.Time{})},
		}, "bob is online\nbob is away\nbob is offline, last seen 17:30\n" +
			"bob is offline, last seen 2026-12-02 18:30\nbob is offline\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out strings.Builder
			sent := new(sentLog)
			for seq, text := range tt.sent {
				sent.add(client.ToUser("bob"), seq, text)
			}
			p := newPrinter(&out, "alice", false, sent)
			p.now = func() time.Time { return now }
			p.seed([]*qimpb.ConversationState{{ToUser: "bob", ReadSeq: 3, PeerDelivered: 3, PeerRead: 1}})
			for _, s := range tt.steps {
				var err error
				switch {
				case s.ev != nil:
					err = p.event(s.ev)
				case s.m != nil:
					err = p.message(s.m)
				default:
					p.now = func() time.Time { return now.Add(s.expire) }
					err = p.expire()
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if out.String() != tt.want {
				t.Fatalf("printed\n%s\nwant\n%s", out.String(), tt.want)
			}
		})
	}
}

func mustTxt(t *testing.T, s string) []byte {
	t.Helper()
	b, err := proto.Marshal(&qimpb.MessageTxt{Txt: s})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPrinterJSON checks the --json form of each kind of event.
func TestPrinterJSON(t *testing.T) {
	var out testserver.Buffer
	p := newPrinter(&out, "alice", true, new(sentLog))
	for _, ev := range []*qimpb.Event{
		{Receipt: &qimpb.Receipt{User: "bob", ToUser: "bob", Delivered: 5, Read: 4}},
		{ReceiptCount: &qimpb.ReceiptCount{GroupId: "g1", Seq: 5, Members: 4, Delivered: 3, Read: 1}},
		{Typing: &qimpb.Typing{FromUser: "carol", ToGroup: "g1", Active: true, TtlMs: 6000}},
		{Presence: &qimpb.Presence{User: "bob", State: qimpb.PresenceState_AWAY, LastSeen: 7, Since: 8}},
	} {
		if err := p.event(ev); err != nil {
			t.Fatal(err)
		}
	}
	p.now = func() time.Time { return time.Now().Add(time.Hour) }
	p.expire() // nothing: JSON readers have ttl_ms
	want := `{"event":"receipt","conv":"@bob","user":"bob","delivered":5,"read":4,"read_private":0}
{"event":"receipt_count","conv":"#g1","seq":5,"members":4,"delivered":3,"read":1}
{"event":"typing","conv":"#g1","from":"carol","active":true,"ttl_ms":6000}
{"event":"presence","user":"bob","state":"away","last_seen":7,"since":8}
`
	if out.String() != want {
		t.Fatalf("printed\n%s\nwant\n%s", out.String(), want)
	}
	for line := range strings.Lines(out.String()) {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSentLog(t *testing.T) {
	var l sentLog
	bob := client.ToUser("bob")
	for seq := uint64(1); seq <= maxSent+44; seq += 1 {
		l.add(bob, seq, fmt.Sprint(seq))
	}
	l.add(bob, 0, "unstored")
	if got := l.between(bob, 0, maxSent+44); len(got) != maxSent || got[0].seq != 45 {
		t.Fatalf("kept %d messages from #%d, want %d from #45", len(got), got[0].seq, maxSent)
	}
	if got := l.between(bob, 99, 101); len(got) != 2 || got[0].text != "100" || got[1].text != "101" {
		t.Fatalf("between 99 and 101: %v", got)
	}
	if got := l.between(client.ToUser("carol"), 0, 1000); got != nil {
		t.Fatalf("carol: %v", got)
	}
}

// TestTypist checks when chat says "typing" (in fake time).
func TestTypist(t *testing.T) {
	for _, tt := range []struct {
		name string
		// play drives the typist; each key or line sent is followed by
		// a pause.
		play func(ty *typist)
		want string // what was sent, at which time
	}{
		{"keys then idle", func(ty *typist) {
			for range 8 { // a key every 0.5 s for 4 s
				ty.key()
				time.Sleep(500 * time.Millisecond)
			}
			time.Sleep(10 * time.Second)
		}, "0s on, 3s on, 8.5s off"},
		{"line sent", func(ty *typist) {
			ty.key()
			time.Sleep(time.Second)
			ty.key()
			ty.lineSent() // after the key: it is not undone
			time.Sleep(time.Second)
			ty.key()
			time.Sleep(10 * time.Second)
		}, "0s on, 1s off, 2s on, 7s off"},
		{"sent without typing", func(ty *typist) {
			ty.lineSent()
			time.Sleep(time.Second)
		}, ""},
		{"stopped while typing", func(ty *typist) {
			ty.key()
			time.Sleep(time.Second)
		}, "0s on, 1s off"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				start := time.Now()
				var got []string
				ty := newTypist(func(active bool) {
					state := "off"
					if active {
						state = "on"
					}
					got = append(got, fmt.Sprint(time.Since(start), " ", state))
				})
				stop := make(chan struct{})
				done := make(chan struct{})
				go func() {
					defer close(done)
					ty.run(stop)
				}()
				tt.play(ty)
				synctest.Wait()
				close(stop)
				<-done
				if s := strings.Join(got, ", "); s != tt.want {
					t.Fatalf("sent %q, want %q", s, tt.want)
				}
			})
		})
	}
}

// TestPrintContacts checks the lines of contacts list.
func TestPrintContacts(t *testing.T) {
	now := time.Date(2026, 12, 3, 18, 30, 0, 0, time.UTC)
	seen := time.Date(2026, 12, 3, 17, 2, 0, 0, time.UTC).UnixMilli()
	shown := map[string]*qimpb.Presence{
		"bob":   {User: "bob", State: qimpb.PresenceState_ONLINE, Since: seen},
		"carol": {User: "carol", State: qimpb.PresenceState_OFFLINE, LastSeen: seen, Since: seen},
		"erin":  {User: "erin", State: qimpb.PresenceState_AWAY, LastSeen: seen, Since: seen},
	}
	var out strings.Builder
	if err := printContacts(&out, []string{"bob", "carol", "dave", "erin"}, shown, now, false); err != nil {
		t.Fatal(err)
	}
	if want := "bob    online\ncarol  offline, last seen 2026-12-03 17:02\ndave   (hidden)\nerin   away\n"; out.String() != want {
		t.Fatalf("printed\n%s\nwant\n%s", out.String(), want)
	}
	out.Reset()
	if err := printContacts(&out, []string{"carol", "dave"}, shown, now, true); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`[{"user":"carol","state":"offline","last_seen":%d,"since":%d},{"user":"dave","state":"hidden","last_seen":0,"since":0}]`+"\n", seen, seen)
	if out.String() != want {
		t.Fatalf("printed %s, want %s", out.String(), want)
	}
}

package httpapi_test

import (
	"net/http"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/daemon"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
)

// expectInbox checks the inbox of c: each conversation of want, by key,
// must be exactly as given, and there must be no other.
func expectInbox(t *testing.T, a *api, what string, c cred, want ...*qimpb.Conversation) {
	t.Helper()
	got := a.inbox(c)
	if len(got) != len(want) {
		t.Fatalf("%s: inbox %v, want %v", what, got, want)
	}
	for _, w := range want {
		if g := got[w.Conversation]; !proto.Equal(g, w) {
			t.Fatalf("%s: %s is\n%v, want\n%v", what, w.Conversation, g, w)
		}
	}
}

// expectRead checks the answer of a read.
func expectRead(t *testing.T, what string, got *qimpb.ReadResult, readSeq, unread uint64) {
	t.Helper()
	if got.ReadSeq != readSeq || got.Unread != unread {
		t.Fatalf("%s: %v, want read_seq %d, unread %d", what, got, readSeq, unread)
	}
}

// TestMarkRead moves read cursors with POST /v1/conversations/{c}/read and
// reads them back in both users' inboxes: unread counts that follow the
// user's read cursor (shared by its devices, moved by its own sends too),
// cursors that only move forward, the other user's delivered and read
// receipts, and every refusal, after which nothing moved.
func TestMarkRead(t *testing.T) {
	eachTransport(t, testserver.Options{}, func(t *testing.T, a *api) {
		team := a.createGroup("alice", "team")
		a.join("bob", team)
		bobPhone := a.dial("bob", "phone")
		for _, txt := range []string{"one", "two", "three"} {
			a.send(a.user("alice"), `{"to_user":"bob","text":"`+txt+`"}`)
		}
		// One conversation at a time: the order of two conversations'
		// messages is not kept.
		expectTexts(t, bobPhone, "one", "two", "three")
		a.send(a.user("alice"), `{"to_group":"`+team+`","text":"four"}`)
		a.send(a.user("bob"), `{"to_group":"`+team+`","text":"five"}`)
		expectTexts(t, bobPhone, "four", "five")
		direct, group := "u:alice:bob", "g:"+team

		// Bob's phone acknowledged the 1:1 messages: delivered to bob, as
		// alice sees it, but not read. A sender has read its own messages.
		aliceDirect := &qimpb.Conversation{Conversation: direct, Peer: "bob", LastSeq: 3, ReadSeq: 3, PeerDelivered: 3}
		aliceGroup := &qimpb.Conversation{Conversation: group, GroupId: team, LastSeq: 2, ReadSeq: 1, Unread: 1}
		eventually(t, "alice sees bob's phone's acknowledgement", func() bool {
			return a.inbox(a.user("alice"))[direct].GetPeerDelivered() == 3
		})
		expectInbox(t, a, "alice at first", a.user("alice"), aliceDirect, aliceGroup)
		bobDirect := &qimpb.Conversation{Conversation: direct, Peer: "alice", LastSeq: 3, Unread: 3}
		bobGroup := &qimpb.Conversation{Conversation: group, GroupId: team, LastSeq: 2, ReadSeq: 2}
		expectInbox(t, a, "bob's web at first", a.device("bob", "web"), bobDirect, bobGroup)

		expectRead(t, "bob reads 2", a.markRead(a.device("bob", "web"), direct, 2), 2, 1)
		bobDirect.ReadSeq, bobDirect.Unread = 2, 1
		aliceDirect.PeerRead = 2
		expectInbox(t, a, "bob's web after reading 2", a.device("bob", "web"), bobDirect, bobGroup)
		expectInbox(t, a, "alice after bob read 2", a.user("alice"), aliceDirect, aliceGroup)
		// One cursor for all of bob's devices.
		if c := a.inbox(a.device("bob", "phone"))[direct]; c.ReadSeq != 2 || c.Unread != 1 || c.Acked != 3 {
			t.Fatalf("bob's phone after bob read 2: %v", c)
		}

		// Forward only: reading less changes nothing and answers the
		// cursor as it is.
		expectRead(t, "bob reads 1", a.markRead(a.user("bob"), direct, 1), 2, 1)
		expectRead(t, "bob reads 2 again", a.markRead(a.user("bob"), direct, 2), 2, 1)
		expectInbox(t, a, "bob after reading back", a.device("bob", "web"), bobDirect, bobGroup)
		expectInbox(t, a, "alice after bob read back", a.user("alice"), aliceDirect, aliceGroup)

		// The backend acting as bob; a seq written as a string.
		var res qimpb.ReadResult
		a.call("POST", "/v1/conversations/"+direct+"/read", a.key("bob"), `{"seq":"3"}`, http.StatusOK, &res)
		expectRead(t, "the backend as bob reads 3", &res, 3, 0)
		bobDirect.ReadSeq, bobDirect.Unread = 3, 0
		aliceDirect.PeerRead = 3

		// A group: the cursor moves, and no peer receipts.
		expectRead(t, "alice reads the group", a.markRead(a.signed("alice"), group, 2), 2, 0)
		aliceGroup.ReadSeq, aliceGroup.Unread = 2, 0
		expectInbox(t, a, "alice after reading the group", a.user("alice"), aliceDirect, aliceGroup)
		expectInbox(t, a, "bob after alice read the group", a.device("bob", "web"), bobDirect, bobGroup)

		for _, tt := range []struct {
			name   string
			c      cred
			conv   string
			body   string
			status int
			code   qimpb.Code
		}{
			{"beyond the last seq", a.user("bob"), direct, `{"seq":4}`, 400, qimpb.Code_INVALID_ARGUMENT},
			{"far beyond", a.user("bob"), direct, `{"seq":"18446744073709551615"}`, 400, qimpb.Code_INVALID_ARGUMENT},
			{"seq 0", a.user("bob"), direct, `{"seq":0}`, 400, qimpb.Code_INVALID_ARGUMENT},
			{"no seq", a.user("bob"), direct, `{}`, 400, qimpb.Code_INVALID_ARGUMENT},
			{"empty body", a.user("bob"), direct, ``, 400, qimpb.Code_INVALID_ARGUMENT},
			{"beyond a group's last seq", a.user("bob"), group, `{"seq":3}`, 400, qimpb.Code_INVALID_ARGUMENT},
			{"a stranger to a 1:1 conversation", a.user("carol"), direct, `{"seq":1}`, 403, qimpb.Code_FORBIDDEN},
			{"the backend acting as a stranger", a.key("carol"), direct, `{"seq":1}`, 403, qimpb.Code_FORBIDDEN},
			{"a non-member of a group", a.user("carol"), group, `{"seq":1}`, 403, qimpb.Code_FORBIDDEN},
			{"a conversation nobody wrote to", a.user("carol"), "u:bob:carol", `{"seq":1}`, 400, qimpb.Code_INVALID_ARGUMENT},
			{"no such group", a.user("bob"), "g:nosuchgroup", `{"seq":1}`, 404, qimpb.Code_NOT_FOUND},
			{"users out of order", a.user("bob"), "u:bob:alice", `{"seq":1}`, 400, qimpb.Code_INVALID_ARGUMENT},
			{"no kind", a.user("bob"), "alice:bob", `{"seq":1}`, 400, qimpb.Code_INVALID_ARGUMENT},
			{"empty group", a.user("bob"), "g:", `{"seq":1}`, 400, qimpb.Code_INVALID_ARGUMENT},
			{"backend acting as nobody", a.signed(""), direct, `{"seq":1}`, 400, qimpb.Code_INVALID_ARGUMENT},
			{"seq not a number", a.user("bob"), direct, `{"seq":"two"}`, 400, qimpb.Code_BAD_REQUEST},
			{"negative seq", a.user("bob"), direct, `{"seq":-1}`, 400, qimpb.Code_BAD_REQUEST},
			{"unknown field", a.user("bob"), direct, `{"seq":1,"to_user":"alice"}`, 400, qimpb.Code_BAD_REQUEST},
		} {
			reason := a.fail("POST", "/v1/conversations/"+tt.conv+"/read", tt.c, tt.body, tt.status, tt.code)
			t.Logf("%s: %s", tt.name, reason)
		}
		a.fail("GET", "/v1/conversations/"+direct+"/read", a.user("bob"), "", http.StatusNotFound, qimpb.Code_NOT_FOUND)
		expectInbox(t, a, "bob after the refusals", a.device("bob", "web"), bobDirect, bobGroup)
		expectInbox(t, a, "alice after the refusals", a.user("alice"), aliceDirect, aliceGroup)
		expectInbox(t, a, "carol after the refusals", a.user("carol"))

		// A new message is unread for bob, and read for alice who sent it.
		a.send(a.user("alice"), `{"to_user":"bob","text":"six"}`)
		expectTexts(t, bobPhone, "six")
		bobDirect.LastSeq, bobDirect.Unread = 4, 1
		aliceDirect.LastSeq, aliceDirect.ReadSeq = 4, 4
		expectInbox(t, a, "bob after six", a.device("bob", "web"), bobDirect, bobGroup)
		expectRead(t, "bob reads six", a.markRead(a.user("bob"), direct, 4), 4, 0)
	})
}

// TestSettings stores a user's settings with PUT /v1/settings and reads
// them back with GET, and checks what hide_read_receipts does: the user's
// read cursor still moves, but the other user no longer sees it move.
func TestSettings(t *testing.T) {
	eachTransport(t, testserver.Options{}, func(t *testing.T, a *api) {
		get := func(c cred) bool {
			t.Helper()
			var s qimpb.Settings
			a.call("GET", "/v1/settings", c, "", http.StatusOK, &s)
			return s.HideReadReceipts
		}
		put := func(c cred, body string) bool {
			t.Helper()
			var s qimpb.Settings
			a.call("PUT", "/v1/settings", c, body, http.StatusOK, &s)
			return s.HideReadReceipts
		}
		if get(a.user("alice")) {
			t.Fatal("alice hides read receipts before she said so")
		}
		if !put(a.user("alice"), `{"hide_read_receipts":true}`) || !get(a.user("alice")) || !get(a.key("alice")) {
			t.Fatal("alice's hide_read_receipts did not stick")
		}
		if get(a.user("bob")) {
			t.Fatal("bob hides read receipts after alice said so")
		}

		for _, txt := range []string{"one", "two", "three"} {
			a.send(a.user("bob"), `{"to_user":"alice","text":"`+txt+`"}`)
		}
		const direct = "u:alice:bob"
		expectRead(t, "alice, hiding, reads 1", a.markRead(a.user("alice"), direct, 1), 1, 2)
		if c := a.inbox(a.user("bob"))[direct]; c.PeerRead != 0 {
			t.Fatalf("bob sees alice's hidden read: %v", c)
		}
		if c := a.inbox(a.user("alice"))[direct]; c.ReadSeq != 1 || c.Unread != 2 {
			t.Fatalf("alice's own cursor while hiding: %v", c)
		}

		// A PUT stores every setting: {} turns hiding off.
		if put(a.signed("alice"), `{}`) || get(a.user("alice")) {
			t.Fatal("alice still hides read receipts")
		}
		expectRead(t, "alice, sharing, reads 2", a.markRead(a.user("alice"), direct, 2), 2, 1)
		if c := a.inbox(a.user("bob"))[direct]; c.PeerRead != 2 {
			t.Fatalf("bob does not see alice's read: %v", c)
		}

		for _, tt := range []struct {
			name, method string
			c            cred
			body         string
			status       int
			code         qimpb.Code
		}{
			{"get, backend acting as nobody", "GET", a.signed(""), "", 400, qimpb.Code_INVALID_ARGUMENT},
			{"put, backend acting as nobody", "PUT", a.key(""), `{"hide_read_receipts":true}`, 400, qimpb.Code_INVALID_ARGUMENT},
			{"not a boolean", "PUT", a.user("alice"), `{"hide_read_receipts":"yes"}`, 400, qimpb.Code_BAD_REQUEST},
			{"unknown setting", "PUT", a.user("alice"), `{"theme":"dark"}`, 400, qimpb.Code_BAD_REQUEST},
			{"not JSON", "PUT", a.user("alice"), `hide_read_receipts=true`, 400, qimpb.Code_BAD_REQUEST},
			{"post", "POST", a.user("alice"), `{"hide_read_receipts":true}`, 404, qimpb.Code_NOT_FOUND},
		} {
			reason := a.fail(tt.method, "/v1/settings", tt.c, tt.body, tt.status, tt.code)
			t.Logf("%s: %s", tt.name, reason)
		}
		if get(a.user("alice")) {
			t.Fatal("a refused PUT changed alice's settings")
		}
	})
}

// TestReceiptsTenancy checks that read cursors and settings belong to one
// application: the same user ids in another application have their own.
func TestReceiptsTenancy(t *testing.T) {
	eachTransport(t, testserver.Options{Apps: []string{otherApp}}, func(t *testing.T, a *api) {
		other := func(user string) cred {
			return cred{app: otherApp, user: user, authz: "Bearer " + a.srv.TokenFor(otherOrg, otherAppkey, user, time.Hour)}
		}
		const direct = "u:alice:bob"
		for _, txt := range []string{"one", "two", "three"} {
			a.send(a.user("alice"), `{"to_user":"bob","text":"`+txt+`"}`)
		}
		// Nothing was written in the other application: nothing to read.
		a.fail("POST", "/v1/conversations/"+direct+"/read", other("bob"), `{"seq":1}`, http.StatusBadRequest, qimpb.Code_INVALID_ARGUMENT)
		expectInbox(t, a, "bob of the other application", other("bob"))

		a.send(other("alice"), `{"to_user":"bob","text":"elsewhere"}`)
		expectRead(t, "bob of the other application reads", a.markRead(other("bob"), direct, 1), 1, 0)
		expectRead(t, "bob of demo reads", a.markRead(a.user("bob"), direct, 2), 2, 1)
		expectInbox(t, a, "bob of the other application", other("bob"),
			&qimpb.Conversation{Conversation: direct, Peer: "alice", LastSeq: 1, ReadSeq: 1})
		expectInbox(t, a, "bob of demo", a.user("bob"),
			&qimpb.Conversation{Conversation: direct, Peer: "alice", LastSeq: 3, ReadSeq: 2, Unread: 1})
		if c := a.inbox(other("alice"))[direct]; c.PeerRead != 1 {
			t.Fatalf("alice of the other application sees bob's read at %d, want 1", c.PeerRead)
		}

		var s qimpb.Settings
		a.call("PUT", "/v1/settings", a.user("bob"), `{"hide_read_receipts":true}`, http.StatusOK, &s)
		a.call("GET", "/v1/settings", other("bob"), "", http.StatusOK, &s)
		if s.HideReadReceipts {
			t.Fatal("bob of demo's settings apply to bob of the other application")
		}
	})
}

// TestServerHidesReadReceipts runs a server that hides every read receipt
// (daemon.Config.NoReadReceipts): the settings in force say so whatever a
// user stores, and a read moves the reader's cursor only.
func TestServerHidesReadReceipts(t *testing.T) {
	hide := testserver.Options{Configure: func(c *daemon.Config) { c.NoReadReceipts = true }}
	eachTransport(t, hide, func(t *testing.T, a *api) {
		for _, tt := range []struct {
			method, body string
		}{{"GET", ""}, {"PUT", `{"hide_read_receipts":false}`}, {"PUT", `{}`}, {"GET", ""}} {
			var s qimpb.Settings
			a.call(tt.method, "/v1/settings", a.user("alice"), tt.body, http.StatusOK, &s)
			if !s.HideReadReceipts {
				t.Fatalf("%s /v1/settings %s: %v, want hide_read_receipts", tt.method, tt.body, &s)
			}
		}
		a.send(a.user("bob"), `{"to_user":"alice","text":"one"}`)
		a.send(a.user("bob"), `{"to_user":"alice","text":"two"}`)
		const direct = "u:alice:bob"
		expectRead(t, "alice reads 2", a.markRead(a.user("alice"), direct, 2), 2, 0)
		if c := a.inbox(a.user("alice"))[direct]; c.ReadSeq != 2 || c.Unread != 0 {
			t.Fatalf("alice's own cursor: %v", c)
		}
		if c := a.inbox(a.user("bob"))[direct]; c.PeerRead != 0 {
			t.Fatalf("bob sees alice's read on a server that hides them: %v", c)
		}
	})
}

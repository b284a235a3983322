package httpapi_test

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
)

// TestHealthAndUnknownPaths checks GET /v1/health, which needs no
// credentials, and that a path or method the API does not serve is a 404
// with a JSON error.
func TestHealthAndUnknownPaths(t *testing.T) {
	eachTransport(t, testserver.Options{}, func(t *testing.T, a *api) {
		var h qimpb.Health
		a.call("GET", "/v1/health", cred{}, "", http.StatusOK, &h)
		if h.Status != "ok" {
			t.Fatalf("health %q", h.Status)
		}
		for _, tt := range []struct{ method, path string }{
			{"GET", "/v1/nothing"},
			{"GET", "/"},
			{"PATCH", "/v1/messages"},
			{"DELETE", "/v1/health"},
			{"GET", "/v2/health"},
		} {
			a.fail(tt.method, tt.path, a.user("alice"), "", http.StatusNotFound, qimpb.Code_NOT_FOUND)
		}
	})
}

// TestMintToken mints tokens for users through POST /v1/tokens: a minted
// token connects a QUIC device of its user (and of no other), lives as
// long as asked, and @system gets none.
func TestMintToken(t *testing.T) {
	eachTransport(t, testserver.Options{}, func(t *testing.T, a *api) {
		mint := func(body string) *qimpb.MintTokenResponse {
			t.Helper()
			var res qimpb.MintTokenResponse
			a.call("POST", "/v1/tokens", a.signed(""), body, http.StatusOK, &res)
			return &res
		}
		for _, tt := range []struct {
			body string
			ttl  time.Duration
		}{
			{`{"user":"dave","ttl_seconds":600}`, 10 * time.Minute},
			{`{"user":"dave","ttl_seconds":"600"}`, 10 * time.Minute},
			{`{"user":"dave"}`, 24 * time.Hour},
			{`{"user":"dave","ttl_seconds":2592000}`, 30 * 24 * time.Hour},
		} {
			res := mint(tt.body)
			if want := time.Now().Add(tt.ttl).Unix(); res.User != "dave" || res.Expires < want-10 || res.Expires > want+1 {
				t.Fatalf("%s: minted %v, want an expiry near %d", tt.body, res, want)
			}
		}

		res := mint(`{"user":"dave","ttl_seconds":600}`)
		cfg := a.srv.ClientConfig("dave", "phone")
		cfg.Token = res.Token
		dave := testserver.Dial(t, cfg)
		if got := dave.Connected().GetUser(); got != "dave" {
			t.Fatalf("connected as %q", got)
		}
		// The minted token works for the HTTP API too.
		var contacts qimpb.ContactResult
		a.call("GET", "/v1/contacts", cred{user: "dave", authz: "Bearer " + res.Token}, "", http.StatusOK, &contacts)

		cfg = a.srv.ClientConfig("erin", "phone")
		cfg.Token = res.Token
		if c, err := client.Dial(ctx(t), cfg); err == nil {
			c.Close()
			t.Fatal("dave's token connected erin")
		} else if !errors.Is(err, &client.Error{Code: qimpb.Code_UNAUTHENTICATED}) {
			t.Fatalf("erin with dave's token: %v, want UNAUTHENTICATED", err)
		}

		for _, tt := range []struct {
			body   string
			status int
			code   qimpb.Code
		}{
			{`{"user":"@system"}`, 400, qimpb.Code_INVALID_ARGUMENT},
			{`{"user":""}`, 400, qimpb.Code_INVALID_ARGUMENT},
			{``, 400, qimpb.Code_INVALID_ARGUMENT},
			{`{"user":"a b"}`, 400, qimpb.Code_INVALID_ARGUMENT},
			{`{"user":"dave","ttl_seconds":-1}`, 400, qimpb.Code_INVALID_ARGUMENT},
			{`{"user":"dave","ttl_seconds":2592001}`, 400, qimpb.Code_INVALID_ARGUMENT},
			// ttl_seconds*1e9 overflows a time.Duration to 0.29 s.
			{`{"user":"dave","ttl_seconds":18446744074}`, 400, qimpb.Code_INVALID_ARGUMENT},
			{`{"user":"dave","ttl_seconds":"9223372036854775807"}`, 400, qimpb.Code_INVALID_ARGUMENT},
			{`{"user":"dave","ttl_seconds":"soon"}`, 400, qimpb.Code_BAD_REQUEST},
			{`{"user":"dave","admin":true}`, 400, qimpb.Code_BAD_REQUEST},
			{`{"user":`, 400, qimpb.Code_BAD_REQUEST},
		} {
			reason := a.fail("POST", "/v1/tokens", a.key(""), tt.body, tt.status, tt.code)
			t.Logf("%s: %s", tt.body, reason)
		}
	})
}

// TestSendMessage sends messages of every kind over HTTP and checks what a
// QUIC device of the recipient receives, then every refusal, after which
// the device must have received nothing more.
func TestSendMessage(t *testing.T) {
	eachTransport(t, testserver.Options{}, func(t *testing.T, a *api) {
		team := a.createGroup("alice", "team")
		a.join("bob", team)
		carols := a.createGroup("carol", "carol's") // neither alice nor @system is a member
		bob := a.dial("bob", "phone")
		carol := a.dial("carol", "phone")

		ack := a.send(a.device("alice", "web"), `{"to_user":"bob","text":"hello","client_msg_id":"m1"}`)
		if ack.Seq != 1 || ack.Id == 0 || ack.Duplicate || time.Since(time.UnixMilli(ack.Timestamp)).Abs() > time.Minute {
			t.Fatalf("ack %v", ack)
		}
		m := expectTexts(t, bob, "hello")[0]
		if m.FromUser != "alice" || m.FromDevice != "web" || m.ToUser != "bob" || m.Id != ack.Id || m.Seq != ack.Seq || m.Timestamp != ack.Timestamp || m.ClientMsgId != "m1" {
			t.Fatalf("bob received %v, acknowledged %v", m, ack)
		}

		ack = a.send(a.user("alice"), `{"to_user":"bob","type":"IMAGE","image_url":"https://example.com/cat.png"}`)
		m = next(t, bob)
		if m.Type != qimpb.MessageType_IMAGE || client.ImageURL(m) != "https://example.com/cat.png" || m.FromDevice != "default" || m.Seq != ack.Seq {
			t.Fatalf("bob received %v, want the IMAGE", m)
		}

		ack = a.send(a.user("alice"), `{"to_user":"bob","text":"are you there?","online_only":true}`)
		if ack.Seq != 0 || ack.Id != 0 || ack.Timestamp == 0 {
			t.Fatalf("online_only ack %v, want seq 0", ack)
		}
		if m := expectTexts(t, bob, "are you there?")[0]; m.Seq != 0 {
			t.Fatalf("online_only message with seq %d", m.Seq)
		}

		a.send(a.user("alice"), `{"to_group":"`+team+`","text":"hi team"}`)
		if m := expectTexts(t, bob, "hi team")[0]; m.ToGroup != team || m.FromUser != "alice" {
			t.Fatalf("group message %v", m)
		}

		// The backend acting as alice.
		a.send(a.key("alice"), `{"to_user":"bob","text":"from alice's backend"}`)
		if m := expectTexts(t, bob, "from alice's backend")[0]; m.FromUser != "alice" {
			t.Fatalf("backend message as alice %v", m)
		}
		// System messages: to a user, and to a group @system is not a
		// member of.
		a.send(a.signed(""), `{"to_user":"bob","text":"welcome","system":true}`)
		if m := expectTexts(t, bob, "welcome")[0]; m.FromUser != "@system" || m.FromDevice != "api" {
			t.Fatalf("system message %v", m)
		}
		a.send(a.key("alice"), `{"to_group":"`+carols+`","text":"maintenance at 10:00","system":true}`)
		if m := expectTexts(t, carol, "maintenance at 10:00")[0]; m.FromUser != "@system" || m.ToGroup != carols {
			t.Fatalf("system message to a group %v", m)
		}
		if got := a.history(a.signed(""), "g:"+carols, ""); len(got) != 1 || got[0].FromUser != "@system" || got[0].FromDevice != "api" {
			t.Fatalf("history of the group %v", got)
		}

		long := strings.Repeat("x", 4097)
		for _, tt := range []struct {
			name   string
			c      cred
			body   string
			status int
			code   qimpb.Code
		}{
			{"system from a user", a.user("alice"), `{"to_user":"bob","text":"I am the system","system":true}`, 403, qimpb.Code_FORBIDDEN},
			{"both addressees", a.user("alice"), `{"to_user":"bob","to_group":"` + team + `","text":"x"}`, 400, qimpb.Code_INVALID_ARGUMENT},
			{"no addressee", a.user("alice"), `{"text":"x"}`, 400, qimpb.Code_INVALID_ARGUMENT},
			{"empty body", a.user("alice"), ``, 400, qimpb.Code_INVALID_ARGUMENT},
			{"bad user id", a.user("alice"), `{"to_user":"b b","text":"x"}`, 400, qimpb.Code_INVALID_ARGUMENT},
			{"text too long", a.user("alice"), `{"to_user":"bob","text":"` + long + `"}`, 400, qimpb.Code_INVALID_ARGUMENT},
			{"no text", a.user("alice"), `{"to_user":"bob"}`, 400, qimpb.Code_INVALID_ARGUMENT},
			{"client_msg_id too long", a.user("alice"), `{"to_user":"bob","text":"x","client_msg_id":"` + strings.Repeat("c", 65) + `"}`, 400, qimpb.Code_INVALID_ARGUMENT},
			{"image URL not http", a.user("alice"), `{"to_user":"bob","type":"IMAGE","image_url":"ftp://example.com/cat.png"}`, 400, qimpb.Code_INVALID_ARGUMENT},
			{"image URL too long", a.user("alice"), `{"to_user":"bob","type":"IMAGE","image_url":"https://example.com/` + strings.Repeat("c", 2048) + `"}`, 400, qimpb.Code_INVALID_ARGUMENT},
			{"unknown field", a.user("alice"), `{"to_user":"bob","text":"x","priority":"high"}`, 400, qimpb.Code_BAD_REQUEST},
			{"unknown type", a.user("alice"), `{"to_user":"bob","type":"VIDEO","text":"x"}`, 400, qimpb.Code_BAD_REQUEST},
			{"number as text", a.user("alice"), `{"to_user":"bob","text":5}`, 400, qimpb.Code_BAD_REQUEST},
			{"not JSON", a.user("alice"), `to_user=bob&text=x`, 400, qimpb.Code_BAD_REQUEST},
			{"body over 64 KiB", a.user("alice"), `{"to_user":"bob","text":"` + strings.Repeat("x", 64<<10) + `"}`, 413, qimpb.Code_FRAME_TOO_LARGE},
			{"not a member", a.user("alice"), `{"to_group":"` + carols + `","text":"let me in"}`, 403, qimpb.Code_FORBIDDEN},
			{"no such group", a.user("alice"), `{"to_group":"nosuchgroup","text":"x"}`, 404, qimpb.Code_NOT_FOUND},
			{"backend acting as nobody", a.signed(""), `{"to_user":"bob","text":"from whom?"}`, 400, qimpb.Code_INVALID_ARGUMENT},
		} {
			reason := a.fail("POST", "/v1/messages", tt.c, tt.body, tt.status, tt.code)
			t.Logf("%s: %s", tt.name, reason)
		}
		a.send(a.user("alice"), `{"to_user":"bob","text":"last"}`)
		expectTexts(t, bob, "last")
	})
}

// TestInbox reads GET /v1/conversations while a QUIC device of the user
// receives and acknowledges messages: its device's cursor moves, another
// device's does not, and neither moves the unread counts, which follow the
// user's read cursor (TestMarkRead).
func TestInbox(t *testing.T) {
	eachTransport(t, testserver.Options{}, func(t *testing.T, a *api) {
		team := a.createGroup("alice", "team")
		a.join("bob", team)
		bob := a.dial("bob", "phone")
		for _, txt := range []string{"one", "two", "three"} {
			a.send(a.user("alice"), `{"to_user":"bob","text":"`+txt+`"}`)
		}
		// One conversation at a time: the order of two conversations'
		// messages is not kept.
		expectTexts(t, bob, "one", "two", "three")
		a.send(a.user("alice"), `{"to_group":"`+team+`","text":"four"}`)
		a.send(a.user("alice"), `{"to_group":"`+team+`","text":"five"}`)
		expectTexts(t, bob, "four", "five")

		direct, group := "u:alice:bob", "g:"+team
		var got map[string]*qimpb.Conversation
		eventually(t, "bob's phone acknowledged everything", func() bool {
			got = a.inbox(a.device("bob", "phone"))
			return got[direct].GetAcked() == 3 && got[group].GetAcked() == 2 && len(got) == 2
		})
		if c := got[direct]; c.Peer != "alice" || c.GroupId != "" || c.LastSeq != 3 || c.Unread != 3 || c.ReadSeq != 0 {
			t.Fatalf("bob's phone, 1:1: %v", c)
		}
		if c := got[group]; c.Peer != "" || c.GroupId != team || c.LastSeq != 2 || c.Unread != 2 || c.ReadSeq != 0 {
			t.Fatalf("bob's phone, group: %v", c)
		}

		// Another device of bob acknowledged nothing; the backend as bob
		// reads the same.
		for _, c := range []cred{a.device("bob", "tablet"), {user: "bob", device: "tablet", authz: a.key("bob").authz}} {
			got = a.inbox(c)
			if c := got[direct]; c.GetLastSeq() != 3 || c.Acked != 0 || c.Unread != 3 || c.Peer != "alice" {
				t.Fatalf("bob's tablet, 1:1: %v", c)
			}
			if c := got[group]; c.GetLastSeq() != 2 || c.Acked != 0 || c.Unread != 2 {
				t.Fatalf("bob's tablet, group: %v", c)
			}
		}
		if got := a.inbox(a.user("alice")); got[direct].GetPeer() != "bob" || got[direct].LastSeq != 3 {
			t.Fatalf("alice's inbox %v", got)
		}
		if got := a.inbox(a.user("carol")); len(got) != 0 {
			t.Fatalf("carol's inbox %v", got)
		}
		a.fail("GET", "/v1/conversations", a.signed(""), "", http.StatusBadRequest, qimpb.Code_INVALID_ARGUMENT)
	})
}

// TestHistory pages through conversations with
// GET /v1/conversations/{c}/messages, as their users, as strangers, as
// members who left or were kicked, and as the backend.
func TestHistory(t *testing.T) {
	eachTransport(t, testserver.Options{}, func(t *testing.T, a *api) {
		var acks []*qimpb.MessageAck
		for _, txt := range []string{"m1", "m2", "m3", "m4", "m5"} {
			acks = append(acks, a.send(a.device("alice", "web"), `{"to_user":"bob","text":"`+txt+`","client_msg_id":"id-`+txt+`"}`))
		}
		const direct = "u:alice:bob"
		texts := func(ms []*qimpb.ApiMessage) string {
			var l []string
			for _, m := range ms {
				l = append(l, m.Text)
			}
			return strings.Join(l, ",")
		}
		for _, tt := range []struct {
			query string
			want  string
		}{
			{"", "m1,m2,m3,m4,m5"},
			{"?limit=2", "m4,m5"},
			{"?before_seq=4&limit=2", "m2,m3"},
			{"?before_seq=2&limit=2", "m1"},
			{"?before_seq=1", ""},
			{"?limit=0&before_seq=0", "m1,m2,m3,m4,m5"},
			{"?limit=100000", "m1,m2,m3,m4,m5"},
		} {
			for _, c := range []cred{a.user("alice"), a.user("bob"), a.signed(""), a.key("")} {
				if got := texts(a.history(c, direct, tt.query)); got != tt.want {
					t.Fatalf("%s%s as %s: %s, want %s", direct, tt.query, c.user, got, tt.want)
				}
			}
		}
		got := a.history(a.user("bob"), direct, "?limit=1")[0]
		want := &qimpb.ApiMessage{Id: acks[4].Id, Seq: 5, Timestamp: acks[4].Timestamp, FromUser: "alice", FromDevice: "web",
			ToUser: "bob", Type: qimpb.MessageType_TXT, Text: "m5", ClientMsgId: "id-m5", Conversation: direct}
		if !proto.Equal(got, want) {
			t.Fatalf("history message\n%v, want\n%v", got, want)
		}

		team := a.createGroup("alice", "team")
		a.join("bob", team)
		a.join("carol", team)
		a.send(a.user("alice"), `{"to_group":"`+team+`","text":"g1"}`)
		group := "g:" + team
		for _, c := range []cred{a.user("alice"), a.user("bob"), a.user("carol"), a.signed(""), a.key("carol")} {
			if got := texts(a.history(c, group, "")); got != "g1" {
				t.Fatalf("%s as %s: %s", group, c.user, got)
			}
		}
		var res qimpb.GroupResult
		a.call("DELETE", "/v1/groups/"+team+"/members/carol", a.user("alice"), "", http.StatusOK, &res)
		a.call("DELETE", "/v1/groups/"+team+"/members/bob", a.user("bob"), "", http.StatusOK, &res)
		a.send(a.user("alice"), `{"to_group":"`+team+`","text":"g2"}`)

		for _, tt := range []struct {
			name   string
			c      cred
			conv   string
			query  string
			status int
			code   qimpb.Code
		}{
			{"a stranger to a 1:1 conversation", a.user("carol"), direct, "", 403, qimpb.Code_FORBIDDEN},
			{"the backend acting as a stranger", a.key("carol"), direct, "", 403, qimpb.Code_FORBIDDEN},
			{"a non-member", a.user("dave"), group, "", 403, qimpb.Code_FORBIDDEN},
			{"a kicked member", a.user("carol"), group, "", 403, qimpb.Code_FORBIDDEN},
			{"a member who left", a.user("bob"), group, "?before_seq=2", 403, qimpb.Code_FORBIDDEN},
			{"no such group", a.user("alice"), "g:nosuchgroup", "", 404, qimpb.Code_NOT_FOUND},
			{"users out of order", a.user("alice"), "u:bob:alice", "", 400, qimpb.Code_INVALID_ARGUMENT},
			{"one user", a.user("alice"), "u:alice", "", 400, qimpb.Code_INVALID_ARGUMENT},
			{"no kind", a.user("alice"), "alice:bob", "", 400, qimpb.Code_INVALID_ARGUMENT},
			{"unknown kind", a.user("alice"), "x:alice:bob", "", 400, qimpb.Code_INVALID_ARGUMENT},
			{"empty group", a.signed(""), "g:", "", 400, qimpb.Code_INVALID_ARGUMENT},
			{"limit not a number", a.user("alice"), direct, "?limit=ten", 400, qimpb.Code_INVALID_ARGUMENT},
			{"negative before_seq", a.user("alice"), direct, "?before_seq=-1", 400, qimpb.Code_INVALID_ARGUMENT},
		} {
			path := "/v1/conversations/" + tt.conv + "/messages" + tt.query
			reason := a.fail("GET", path, tt.c, "", tt.status, tt.code)
			t.Logf("%s: %s", tt.name, reason)
		}
		if got := texts(a.history(a.signed(""), group, "")); got != "g1,g2" {
			t.Fatalf("%s as the backend: %s", group, got)
		}
	})
}

// TestContacts adds and removes contacts over HTTP and checks them with the
// user's QUIC device, and the other way round.
func TestContacts(t *testing.T) {
	eachTransport(t, testserver.Options{}, func(t *testing.T, a *api) {
		alice := a.dial("alice", "phone")
		list := func() []string {
			t.Helper()
			var res qimpb.ContactResult
			a.call("GET", "/v1/contacts", a.user("alice"), "", http.StatusOK, &res)
			return res.Users
		}
		var res qimpb.ContactResult
		if got := list(); len(got) != 0 {
			t.Fatalf("contacts at first: %v", got)
		}
		a.call("PUT", "/v1/contacts/bob", a.user("alice"), "", http.StatusOK, &res)
		a.call("PUT", "/v1/contacts/carol", a.key("alice"), "", http.StatusOK, &res)
		a.call("PUT", "/v1/contacts/carol", a.user("alice"), "", http.StatusOK, &res)
		if got := list(); !slices.Equal(got, []string{"bob", "carol"}) {
			t.Fatalf("contacts %v, want bob and carol", got)
		}
		a.call("DELETE", "/v1/contacts/bob", a.user("alice"), "", http.StatusOK, &res)
		if got, err := alice.Contacts(ctx(t)); err != nil || !slices.Equal(got, []string{"carol"}) {
			t.Fatalf("the device's contacts: %v, %v; want carol", got, err)
		}
		if err := alice.AddContact(ctx(t), "dave"); err != nil {
			t.Fatal(err)
		}
		if got := list(); !slices.Equal(got, []string{"carol", "dave"}) {
			t.Fatalf("contacts %v, want carol and dave", got)
		}
		if got := func() []string {
			var res qimpb.ContactResult
			a.call("GET", "/v1/contacts", a.user("bob"), "", http.StatusOK, &res)
			return res.Users
		}(); len(got) != 0 {
			t.Fatalf("bob's contacts: %v", got)
		}
		a.fail("PUT", "/v1/contacts/b%20b", a.user("alice"), "", http.StatusBadRequest, qimpb.Code_INVALID_ARGUMENT)
		a.fail("GET", "/v1/contacts", a.signed(""), "", http.StatusBadRequest, qimpb.Code_INVALID_ARGUMENT)
	})
}

// TestGroups runs every group operation over HTTP: create, members, join,
// invite, list, leave, kick (by the owner; by others, refused), the size
// limit, and a group that does not exist.
func TestGroups(t *testing.T) {
	eachTransport(t, testserver.Options{MaxGroupMembers: 3}, func(t *testing.T, a *api) {
		g := a.createGroup("alice", "team")
		members := func(user string) []string {
			t.Helper()
			var res qimpb.GroupResult
			a.call("GET", "/v1/groups/"+g, a.user(user), "", http.StatusOK, &res)
			if res.Group.GetId() != g || res.Group.Name != "team" || res.Group.Owner != "alice" {
				t.Fatalf("group %v", res.Group)
			}
			slices.Sort(res.Members)
			return res.Members
		}
		if got := members("alice"); !slices.Equal(got, []string{"alice"}) {
			t.Fatalf("members %v", got)
		}
		var res qimpb.GroupResult
		a.call("POST", "/v1/groups/"+g+"/members", a.user("bob"), `{}`, http.StatusOK, &res)
		if res.Group.GetId() != g {
			t.Fatalf("joined %v", res.Group)
		}
		a.call("POST", "/v1/groups/"+g+"/members", a.user("bob"), `{"user":"bob"}`, http.StatusOK, &res)
		a.call("POST", "/v1/groups/"+g+"/members", a.user("bob"), `{"user":"carol"}`, http.StatusOK, &res)
		if got := members("carol"); !slices.Equal(got, []string{"alice", "bob", "carol"}) {
			t.Fatalf("members %v", got)
		}
		carol := a.dial("carol", "phone")
		if got, err := carol.Members(ctx(t), g); err != nil || len(got) != 3 {
			t.Fatalf("members read by a device: %v, %v", got, err)
		}
		reason := a.fail("POST", "/v1/groups/"+g+"/members", a.user("dave"), `{}`, http.StatusConflict, qimpb.Code_LIMIT_EXCEEDED)
		t.Logf("full: %s", reason)

		a.call("GET", "/v1/groups", a.user("carol"), "", http.StatusOK, &res)
		if len(res.Groups) != 1 || res.Groups[0].Id != g {
			t.Fatalf("carol's groups %v", res.Groups)
		}

		a.fail("DELETE", "/v1/groups/"+g+"/members/alice", a.user("bob"), "", http.StatusForbidden, qimpb.Code_FORBIDDEN)
		a.fail("DELETE", "/v1/groups/"+g+"/members/carol", a.user("bob"), "", http.StatusForbidden, qimpb.Code_FORBIDDEN)
		a.fail("DELETE", "/v1/groups/"+g+"/members/carol", a.user("dave"), "", http.StatusForbidden, qimpb.Code_FORBIDDEN)
		a.call("DELETE", "/v1/groups/"+g+"/members/carol", a.user("alice"), "", http.StatusOK, &res)
		a.call("DELETE", "/v1/groups/"+g+"/members/bob", a.user("bob"), "", http.StatusOK, &res)
		if got := members("alice"); !slices.Equal(got, []string{"alice"}) {
			t.Fatalf("members after a kick and a leave %v", got)
		}
		// A kicked member may not come back by itself.
		a.fail("POST", "/v1/groups/"+g+"/members", a.user("carol"), `{}`, http.StatusForbidden, qimpb.Code_FORBIDDEN)
		a.fail("GET", "/v1/groups/"+g, a.user("carol"), "", http.StatusForbidden, qimpb.Code_FORBIDDEN)
		a.call("GET", "/v1/groups", a.user("carol"), "", http.StatusOK, &res)
		if len(res.Groups) != 0 {
			t.Fatalf("carol's groups after the kick %v", res.Groups)
		}
		// The backend acting as a user.
		a.call("POST", "/v1/groups/"+g+"/members", a.key("erin"), `{}`, http.StatusOK, &res)
		a.call("POST", "/v1/groups", a.signed("erin"), `{"name":"erin's"}`, http.StatusCreated, &res)
		if res.Group.GetOwner() != "erin" {
			t.Fatalf("group created by the backend as erin: %v", res.Group)
		}

		for _, tt := range []struct {
			name         string
			method, path string
			c            cred
			body         string
			status       int
			code         qimpb.Code
		}{
			{"no such group", "GET", "/v1/groups/nosuchgroup", a.user("alice"), "", 404, qimpb.Code_NOT_FOUND},
			{"join no such group", "POST", "/v1/groups/nosuchgroup/members", a.user("alice"), "{}", 404, qimpb.Code_NOT_FOUND},
			{"bad group id", "GET", "/v1/groups/no%20such", a.user("alice"), "", 404, qimpb.Code_NOT_FOUND},
			{"no name", "POST", "/v1/groups", a.user("alice"), `{}`, 400, qimpb.Code_INVALID_ARGUMENT},
			{"name too long", "POST", "/v1/groups", a.user("alice"), `{"name":"` + strings.Repeat("n", 129) + `"}`, 400, qimpb.Code_INVALID_ARGUMENT},
			{"unknown field", "POST", "/v1/groups", a.user("alice"), `{"name":"x","public":true}`, 400, qimpb.Code_BAD_REQUEST},
			{"invite by a stranger", "POST", "/v1/groups/" + g + "/members", a.user("dave"), `{"user":"frank"}`, 403, qimpb.Code_FORBIDDEN},
			{"invite a bad id", "POST", "/v1/groups/" + g + "/members", a.user("alice"), `{"user":"a b"}`, 400, qimpb.Code_INVALID_ARGUMENT},
			{"leave by a stranger", "DELETE", "/v1/groups/" + g + "/members/dave", a.user("dave"), "", 403, qimpb.Code_FORBIDDEN},
			{"backend acting as nobody", "POST", "/v1/groups", a.signed(""), `{"name":"x"}`, 400, qimpb.Code_INVALID_ARGUMENT},
		} {
			reason := a.fail(tt.method, tt.path, tt.c, tt.body, tt.status, tt.code)
			t.Logf("%s: %s", tt.name, reason)
		}
	})
}

// TestEndSessions logs a user out with DELETE /v1/users/{user}/sessions:
// each of its QUIC devices is disconnected UNAUTHENTICATED, other users'
// stay.
func TestEndSessions(t *testing.T) {
	eachTransport(t, testserver.Options{}, func(t *testing.T, a *api) {
		phone, tablet := a.dial("bob", "phone"), a.dial("bob", "tablet")
		alice := a.dial("alice", "phone")
		var res qimpb.EndSessionsResponse
		a.call("DELETE", "/v1/users/bob/sessions", a.signed(""), "", http.StatusOK, &res)
		if res.Ended != 2 {
			t.Fatalf("ended %d sessions, want 2", res.Ended)
		}
		for _, dev := range []*client.Client{phone, tablet} {
			select {
			case <-dev.Done():
			case <-time.After(10 * time.Second):
				t.Fatalf("bob/%s still connected", dev.Device())
			}
			if err := dev.Err(); !errors.Is(err, &client.Error{Code: qimpb.Code_UNAUTHENTICATED}) {
				t.Fatalf("bob/%s ended with %v, want UNAUTHENTICATED", dev.Device(), err)
			}
		}
		if _, err := alice.Send(ctx(t), client.ToUser("carol"), client.Outgoing{Text: "still here"}); err != nil {
			t.Fatalf("alice's device after bob's logout: %v", err)
		}
		a.call("DELETE", "/v1/users/bob/sessions", a.key(""), "", http.StatusOK, &res)
		if res.Ended != 0 {
			t.Fatalf("ended %d sessions of a user with none", res.Ended)
		}
		a.fail("DELETE", "/v1/users/b%20b/sessions", a.key(""), "", http.StatusBadRequest, qimpb.Code_INVALID_ARGUMENT)
	})
}

// TestRateLimit makes more requests than a user's rate limit allows: the
// next are refused 429 RATE_LIMITED, over HTTP and on the user's QUIC
// device (one limit for all), while other users are not limited.
func TestRateLimit(t *testing.T) {
	eachTransport(t, testserver.Options{SendRate: 0.01, SendBurst: 5}, func(t *testing.T, a *api) {
		alice := a.dial("alice", "phone")
		limited := -1 // the first request refused
		for i := 0; i < 10 && limited < 0; i++ {
			resp, b := a.do("GET", "/v1/contacts", a.user("alice"), "")
			switch resp.StatusCode {
			case http.StatusOK:
			case http.StatusTooManyRequests:
				a.checkError("GET", "/v1/contacts", resp, b, http.StatusTooManyRequests, qimpb.Code_RATE_LIMITED)
				limited = i
			default:
				t.Fatalf("request %d: %d %s", i, resp.StatusCode, b)
			}
		}
		if limited != 5 {
			t.Fatalf("request %d refused first, want the 6th (a burst of 5)", limited)
		}
		a.fail("POST", "/v1/messages", a.user("alice"), `{"to_user":"bob","text":"x"}`, http.StatusTooManyRequests, qimpb.Code_RATE_LIMITED)
		a.fail("POST", "/v1/messages", a.key("alice"), `{"to_user":"bob","text":"x"}`, http.StatusTooManyRequests, qimpb.Code_RATE_LIMITED)
		if _, err := alice.Send(ctx(t), client.ToUser("bob"), client.Outgoing{Text: "x"}); !errors.Is(err, &client.Error{Code: qimpb.Code_RATE_LIMITED}) {
			t.Fatalf("alice's device: %v, want RATE_LIMITED", err)
		}
		a.send(a.user("bob"), `{"to_user":"alice","text":"not limited"}`)

		// A backend acting as nobody is limited as @system.
		for range 5 {
			a.send(a.signed(""), `{"to_user":"bob","text":"notice","system":true}`)
		}
		a.fail("POST", "/v1/tokens", a.signed(""), `{"user":"bob"}`, http.StatusTooManyRequests, qimpb.Code_RATE_LIMITED)
	})
}

package httpapi_test

import (
	"bytes"
	"cmp"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/qim-im/qim/daemon"
	"github.com/qim-im/qim/httpapi"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
)

// otherApp is a second application of the test servers of the
// authentication tests.
const (
	otherOrg    = "other"
	otherAppkey = "app"
	otherApp    = otherOrg + "/" + otherAppkey
)

// TestAuthentication sends requests with good and bad credentials of every
// kind (docs/HTTP.md section 2): a user's token, a backend's signed
// request, a backend's API key.
func TestAuthentication(t *testing.T) {
	eachTransport(t, testserver.Options{Apps: []string{otherApp}}, func(t *testing.T, a *api) {
		otherSecret, err := daemon.AppSecret(a.srv.DataDir, otherOrg, otherAppkey)
		if err != nil {
			t.Fatal(err)
		}
		const mint, body = "/v1/tokens", `{"user":"alice"}`
		old := time.Now().Add(-6 * time.Minute)
		ahead := time.Now().Add(6 * time.Minute)
		for _, tt := range []struct {
			name         string
			method, path string
			c            cred
			tamper       func(*http.Request) // after signing
			status       int                 // 200 with a MintTokenResponse, or an error
			code         qimpb.Code
		}{
			{name: "signed", c: a.signed(""), status: 200},
			{name: "signed as a user", c: a.signed("bob"), status: 200},
			{name: "signed, 4 minutes old", c: cred{secret: a.secret, ts: time.Now().Add(-4 * time.Minute)}, status: 200},
			{name: "API key", c: a.key(""), status: 200},
			{name: "API key, scheme in lower case", c: cred{authz: "bearer " + httpapi.APIKey(a.secret)}, status: 200},
			{name: "bad signature", c: cred{secret: []byte("not the secret of the application")}, status: 401, code: qimpb.Code_UNAUTHENTICATED},
			{name: "signature of another body", c: a.signed(""), tamper: func(r *http.Request) { setBody(r, `{"user":"mallory"}`) }, status: 401, code: qimpb.Code_UNAUTHENTICATED},
			{name: "signature of another user", c: a.signed("bob"), tamper: func(r *http.Request) { r.Header.Set(httpapi.HeaderUser, "carol") }, status: 401, code: qimpb.Code_UNAUTHENTICATED},
			{name: "signature of another path", c: a.signed(""), tamper: func(r *http.Request) { r.URL.Path = "/v1/users/alice/sessions"; r.Method = "DELETE" }, status: 401, code: qimpb.Code_UNAUTHENTICATED},
			{name: "timestamp 6 minutes old", c: cred{secret: a.secret, ts: old}, status: 401, code: qimpb.Code_UNAUTHENTICATED},
			{name: "timestamp 6 minutes ahead", c: cred{secret: a.secret, ts: ahead}, status: 401, code: qimpb.Code_UNAUTHENTICATED},
			{name: "nonce too short", c: cred{secret: a.secret, nonce: "short"}, status: 401, code: qimpb.Code_UNAUTHENTICATED},
			{name: "nonce with a bad character", c: cred{secret: a.secret, nonce: "nonce/with/slashes"}, status: 401, code: qimpb.Code_UNAUTHENTICATED},
			{name: "signature without a nonce", c: cred{authz: httpapi.SchemeHMAC + " t=1700000000,s=00"}, status: 401, code: qimpb.Code_UNAUTHENTICATED},
			{name: "signed with another application's secret", c: cred{secret: otherSecret}, status: 401, code: qimpb.Code_UNAUTHENTICATED},
			{name: "API key of another application", c: cred{authz: "Bearer " + httpapi.APIKey(otherSecret)}, status: 401, code: qimpb.Code_UNAUTHENTICATED},
			{name: "API key of an unknown application", c: cred{app: "nope/nope", authz: "Bearer " + httpapi.APIKey(a.secret)}, status: 401, code: qimpb.Code_UNAUTHENTICATED},
			{name: "signed for an unknown application", c: cred{app: "nope/nope", secret: a.secret}, status: 401, code: qimpb.Code_UNAUTHENTICATED},
			{name: "no Qim-App", c: a.key(""), tamper: func(r *http.Request) { r.Header.Del(httpapi.HeaderApp) }, status: 401, code: qimpb.Code_UNAUTHENTICATED},
			{name: "no Authorization", c: cred{}, status: 401, code: qimpb.Code_UNAUTHENTICATED},
			{name: "Basic", c: cred{authz: "Basic YWxpY2U6cGFzc3dvcmQ="}, status: 401, code: qimpb.Code_UNAUTHENTICATED},
			{name: "user token on a backend endpoint", c: a.user("alice"), status: 403, code: qimpb.Code_FORBIDDEN},
			{name: "user token on DELETE sessions", method: "DELETE", path: "/v1/users/alice/sessions", c: a.user("alice"), status: 403, code: qimpb.Code_FORBIDDEN},

			// User tokens, on an endpoint for users.
			{name: "token", method: "GET", path: "/v1/contacts", c: a.user("alice"), status: 200},
			{name: "token of another user", method: "GET", path: "/v1/contacts", c: cred{user: "bob", authz: "Bearer " + a.srv.Token("alice")}, status: 401, code: qimpb.Code_UNAUTHENTICATED},
			{name: "token without Qim-User", method: "GET", path: "/v1/contacts", c: cred{authz: "Bearer " + a.srv.Token("alice")}, status: 401, code: qimpb.Code_UNAUTHENTICATED},
			{name: "token of another application", method: "GET", path: "/v1/contacts", c: cred{user: "alice", authz: "Bearer " + a.srv.TokenFor(otherOrg, otherAppkey, "alice", time.Hour)}, status: 401, code: qimpb.Code_UNAUTHENTICATED},
			{name: "token of the other application, for it", method: "GET", path: "/v1/contacts", c: cred{app: otherApp, user: "alice", authz: "Bearer " + a.srv.TokenFor(otherOrg, otherAppkey, "alice", time.Hour)}, status: 200},
			{name: "expired token", method: "GET", path: "/v1/contacts", c: cred{user: "alice", authz: "Bearer " + a.srv.TokenFor(daemon.DemoOrg, daemon.DemoAppkey, "alice", -time.Minute)}, status: 401, code: qimpb.Code_TOKEN_EXPIRED},
			{name: "token of @system", method: "GET", path: "/v1/contacts", c: cred{user: "@system", authz: "Bearer " + a.srv.TokenFor(daemon.DemoOrg, daemon.DemoAppkey, "@system", time.Hour)}, status: 401, code: qimpb.Code_UNAUTHENTICATED},
			{name: "garbage token", method: "GET", path: "/v1/contacts", c: cred{user: "alice", authz: "Bearer v1.1.garbage"}, status: 401, code: qimpb.Code_UNAUTHENTICATED},
			{name: "bad Qim-User", method: "GET", path: "/v1/contacts", c: cred{user: "al ice", authz: "Bearer " + a.srv.Token("alice")}, status: 400, code: qimpb.Code_INVALID_ARGUMENT},
			{name: "bad Qim-Device", method: "GET", path: "/v1/contacts", c: cred{user: "alice", device: "ph/one", authz: "Bearer " + a.srv.Token("alice")}, status: 400, code: qimpb.Code_INVALID_ARGUMENT},
		} {
			method, path, b := cmp.Or(tt.method, "POST"), cmp.Or(tt.path, mint), body
			if method == "GET" || method == "DELETE" {
				b = ""
			}
			req := a.request(method, path, tt.c, []byte(b))
			if tt.tamper != nil {
				tt.tamper(req)
			}
			resp, rb := a.roundTrip(req)
			if tt.status != 200 {
				reason := a.checkError(method, path, resp, rb, tt.status, tt.code)
				t.Logf("%s: %d %s", tt.name, tt.status, reason)
				continue
			}
			switch path {
			case mint:
				var res qimpb.MintTokenResponse
				a.check(method, path, resp, rb, http.StatusOK, &res)
				if res.User != "alice" || res.Token == "" {
					t.Fatalf("%s: minted %v", tt.name, &res)
				}
			default:
				var res qimpb.ContactResult
				a.check(method, path, resp, rb, http.StatusOK, &res)
			}
		}
	})
}

// setBody replaces the body of a request.
func setBody(r *http.Request, body string) {
	r.Body = io.NopCloser(strings.NewReader(body))
	r.ContentLength = int64(len(body))
	r.GetBody = nil
}

// TestSignedRequestReplay sends a signed request twice: the second is a
// replay, refused, while a request that reuses the nonce of a forged one
// (whose signature did not hold) is served: a forger cannot spend a
// backend's nonces.
func TestSignedRequestReplay(t *testing.T) {
	eachTransport(t, testserver.Options{}, func(t *testing.T, a *api) {
		const body = `{"to_user":"bob","text":"once","system":true}`
		c := a.signed("")
		c.nonce = newNonce()
		a.send(c, body)
		reason := a.fail("POST", "/v1/messages", c, body, http.StatusUnauthorized, qimpb.Code_UNAUTHENTICATED)
		if !strings.Contains(reason, "replay") {
			t.Errorf("replay refused with %q", reason)
		}
		// The same nonce in another request, signed again, is a replay too.
		a.fail("POST", "/v1/messages", c, `{"to_user":"bob","text":"twice","system":true}`, http.StatusUnauthorized, qimpb.Code_UNAUTHENTICATED)
		// The message was stored once.
		if got := a.history(a.signed(""), "u:@system:bob", ""); len(got) != 1 || got[0].Text != "once" {
			t.Fatalf("history after a replay: %v", got)
		}

		forged := cred{secret: []byte("a forger does not know the secret"), nonce: newNonce()}
		a.fail("POST", "/v1/messages", forged, body, http.StatusUnauthorized, qimpb.Code_UNAUTHENTICATED)
		good := a.signed("")
		good.nonce = forged.nonce
		a.send(good, body)
	})
}

// TestReplayAcrossTransports sends a signed request over HTTPS, then the
// same over HTTP/3 to the same server, and the other way round: both
// transports share the server's memory of nonces.
func TestReplayAcrossTransports(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{HTTPAuthFailureBurst: -1})
	doc := loadOpenAPI(t)
	trs := transports()
	apis := []*api{newAPI(t, srv, trs[0], doc), newAPI(t, srv, trs[1], doc)}
	for i, first := range apis {
		second := apis[1-i]
		c := first.signed("")
		c.ts, c.nonce = time.Now(), newNonce()
		body := fmt.Sprintf(`{"to_user":"bob","text":"over %s","system":true}`, first.proto)
		first.send(c, body)
		second.fail("POST", "/v1/messages", c, body, http.StatusUnauthorized, qimpb.Code_UNAUTHENTICATED)
	}
	if got := apis[0].history(apis[0].signed(""), "u:@system:bob", ""); len(got) != 2 {
		t.Fatalf("history %v, want the two messages once each", got)
	}
}

// TestIndependentSignature signs requests as docs/HTTP.md section 2.2
// says, without httpapi.Sign and StringToSign, so that a change of the
// algorithm on both sides does not go unnoticed: a POST with a body, and a
// GET with a query, acting as a user.
func TestIndependentSignature(t *testing.T) {
	eachTransport(t, testserver.Options{}, func(t *testing.T, a *api) {
		hmacHex := func(lines ...string) string {
			mac := hmac.New(sha256.New, a.secret)
			mac.Write([]byte(strings.Join(lines, "\n")))
			return hex.EncodeToString(mac.Sum(nil))
		}
		ts := fmt.Sprint(time.Now().Unix())

		body := `{"to_user":"bob","text":"signed by hand","client_msg_id":"hand-1"}`
		sum := sha256.Sum256([]byte(body))
		nonce := newNonce()
		req, err := http.NewRequest("POST", a.base+"/v1/messages", bytes.NewBufferString(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Qim-App", "demo/demo")
		req.Header.Set("Qim-User", "alice")
		req.Header.Set("Authorization", "Qim-HMAC-SHA256 t="+ts+",n="+nonce+",s="+
			hmacHex("qim-api-v1", "POST", "/v1/messages", "demo/demo", "alice", ts, nonce, hex.EncodeToString(sum[:])))
		resp, b := a.roundTrip(req)
		var ack qimpb.MessageAck
		a.check("POST", "/v1/messages", resp, b, http.StatusOK, &ack)

		const uri = "/v1/conversations/u:alice:bob/messages?limit=5&before_seq=0"
		nonce = newNonce()
		req, err = http.NewRequest("GET", a.base+uri, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Qim-App", "demo/demo")
		req.Header.Set("Qim-User", "bob")
		req.Header.Set("Authorization", "Qim-HMAC-SHA256 t="+ts+", n="+nonce+", s="+
			hmacHex("qim-api-v1", "GET", uri, "demo/demo", "bob", ts, nonce, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"))
		resp, b = a.roundTrip(req)
		var page qimpb.HistoryPage
		a.check("GET", uri, resp, b, http.StatusOK, &page)
		if len(page.Messages) != 1 || page.Messages[0].Text != "signed by hand" || page.Messages[0].FromUser != "alice" || page.Messages[0].Seq != ack.Seq {
			t.Fatalf("history %v, want the message signed by hand", page.Messages)
		}
	})
}

// TestAuthFailureLimit makes more failed authentications from one address
// than its burst: its next requests are refused RATE_LIMITED unchecked,
// even with good credentials, while requests that need none still work,
// until the limit lets one more through (one a second).
func TestAuthFailureLimit(t *testing.T) {
	eachTransport(t, testserver.Options{HTTPAuthFailureBurst: 3}, func(t *testing.T, a *api) {
		good := func() *http.Response {
			resp, _ := a.do("GET", "/v1/contacts", a.user("alice"), "")
			return resp
		}
		// Good requests are not failures.
		for range 5 {
			if resp := good(); resp.StatusCode != http.StatusOK {
				t.Fatalf("good request: %d", resp.StatusCode)
			}
		}
		bad := cred{user: "alice", authz: "Bearer " + a.srv.Token("mallory")}
		for range 3 {
			a.fail("GET", "/v1/contacts", bad, "", http.StatusUnauthorized, qimpb.Code_UNAUTHENTICATED)
		}
		a.fail("GET", "/v1/contacts", a.user("alice"), "", http.StatusTooManyRequests, qimpb.Code_RATE_LIMITED)
		a.fail("POST", "/v1/tokens", a.signed(""), `{"user":"alice"}`, http.StatusTooManyRequests, qimpb.Code_RATE_LIMITED)
		a.fail("GET", "/v1/contacts", bad, "", http.StatusTooManyRequests, qimpb.Code_RATE_LIMITED)
		var h qimpb.Health
		a.call("GET", "/v1/health", cred{}, "", http.StatusOK, &h)
		start := time.Now()
		eventually(t, "good credentials accepted again", func() bool {
			switch resp := good(); resp.StatusCode {
			case http.StatusOK:
				return true
			case http.StatusTooManyRequests:
				return false
			default:
				t.Fatalf("good request: %d", resp.StatusCode)
				return false
			}
		})
		if d := time.Since(start); d < 500*time.Millisecond {
			t.Errorf("accepted again after %v; the limit lets one failure a second", d)
		}
	})
}

package httpapi_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"go.uber.org/goleak"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/daemon"
	"github.com/qim-im/qim/httpapi"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
)

// The endpoint tests run every case over both ways into the API, against a
// real qimd (internal/testserver): HTTPS over TCP (HTTP/2, with the
// server's CA) and HTTP/3 on the server's UDP socket. They read what the
// API did with real QUIC devices (package client) connected to the same
// server, and check every JSON answer against docs/openapi.yaml.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// demoApp is the application every test server has.
const demoApp = daemon.DemoOrg + "/" + daemon.DemoAppkey

// transport is one way into the HTTP API.
type transport struct {
	name  string
	proto string // the Proto of every answer
	// client returns an HTTP client of srv's API and the base URL of the
	// API; the client's connections are closed when the test ends.
	client func(t *testing.T, srv *testserver.Server) (*http.Client, string)
}

// transports returns the ways into the API that every test runs over.
func transports() []transport {
	return []transport{
		{"HTTPS", "HTTP/2.0", func(t *testing.T, srv *testserver.Server) (*http.Client, string) {
			tr := &http.Transport{TLSClientConfig: clientTLS(t, srv), ForceAttemptHTTP2: true}
			t.Cleanup(tr.CloseIdleConnections)
			return &http.Client{Transport: tr, Timeout: 20 * time.Second}, "https://" + srv.HTTPAddr
		}},
		{"HTTP3", "HTTP/3.0", func(t *testing.T, srv *testserver.Server) (*http.Client, string) {
			tr := &http3.Transport{TLSClientConfig: clientTLS(t, srv), QUICConfig: &quic.Config{MaxIdleTimeout: 20 * time.Second}}
			t.Cleanup(func() { tr.Close() })
			return &http.Client{Transport: tr, Timeout: 20 * time.Second}, "https://" + srv.Addr
		}},
	}
}

// clientTLS returns a TLS configuration that trusts srv's CA, offering
// no ALPN protocol (each transport sets its own).
func clientTLS(t *testing.T, srv *testserver.Server) *tls.Config {
	t.Helper()
	c := srv.ClientTLS()
	c.NextProtos = nil
	return c
}

// api is a client of the HTTP API of one test server, over one transport.
// Its methods fail the test (t) on anything unexpected.
type api struct {
	t      *testing.T
	srv    *testserver.Server
	hc     *http.Client
	base   string // "https://127.0.0.1:port"
	proto  string // the Proto of every answer
	secret []byte // demo/demo's secret
	doc    *openAPI
}

// eachTransport runs f as a subtest per transport, each against a server
// of its own started with opts. Unless opts sets it, failed
// authentications are not limited (HTTPAuthFailureBurst -1), so that the
// cases that fail on purpose do not slow down the others.
func eachTransport(t *testing.T, opts testserver.Options, f func(t *testing.T, a *api)) {
	doc := loadOpenAPI(t)
	if opts.HTTPAuthFailureBurst == 0 {
		opts.HTTPAuthFailureBurst = -1
	}
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			f(t, newAPI(t, testserver.Start(t, opts), tr, doc))
		})
	}
}

// newAPI returns a client of srv's API over tr.
func newAPI(t *testing.T, srv *testserver.Server, tr transport, doc *openAPI) *api {
	t.Helper()
	secret, err := daemon.AppSecret(srv.DataDir, daemon.DemoOrg, daemon.DemoAppkey)
	if err != nil {
		t.Fatal(err)
	}
	hc, base := tr.client(t, srv)
	return &api{t: t, srv: srv, hc: hc, base: base, proto: tr.proto, secret: secret, doc: doc}
}

// cred is how a request authenticates (docs/HTTP.md section 2).
type cred struct {
	app    string // Qim-App; empty means demo/demo
	user   string // Qim-User, if not empty
	device string // Qim-Device, if not empty
	authz  string // the Authorization header, unless secret is set
	// secret, if set, signs the request (Qim-HMAC-SHA256) at ts (zero:
	// now) with nonce (empty: a new one).
	secret []byte
	ts     time.Time
	nonce  string
}

// user returns the credentials of user's device "default" of demo/demo: its
// token.
func (a *api) user(user string) cred {
	return cred{user: user, authz: "Bearer " + a.srv.Token(user)}
}

// device returns the credentials of user's device.
func (a *api) device(user, device string) cred {
	c := a.user(user)
	c.device = device
	return c
}

// signed returns the credentials of demo/demo's backend signing its
// requests, acting as user (empty: as nobody).
func (a *api) signed(user string) cred { return cred{user: user, secret: a.secret} }

// key returns the credentials of demo/demo's backend with its API key,
// acting as user (empty: as nobody).
func (a *api) key(user string) cred {
	return cred{user: user, authz: "Bearer " + httpapi.APIKey(a.secret)}
}

// newNonce returns a nonce never used before.
func newNonce() string { return "n-" + rand.Text() }

// sign returns the Authorization header of a request signed with secret
// (docs/HTTP.md section 2.2), through httpapi.Sign and StringToSign.
func sign(secret []byte, method, requestURI, app, user string, ts time.Time, nonce string, body []byte) string {
	sum := sha256.Sum256(body)
	s := httpapi.Sign(secret, httpapi.StringToSign(method, requestURI, app, user, strconv.FormatInt(ts.Unix(), 10), nonce, sum[:]))
	return fmt.Sprintf("%s t=%d,n=%s,s=%s", httpapi.SchemeHMAC, ts.Unix(), nonce, s)
}

// request returns a request of the API with credentials c and body.
func (a *api) request(method, path string, c cred, body []byte) *http.Request {
	a.t.Helper()
	req, err := http.NewRequest(method, a.base+path, bytes.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	if len(body) > 0 {
		req.Header.Set("Content-Type", "application/json")
	}
	app := c.app
	if app == "" {
		app = demoApp
	}
	req.Header.Set(httpapi.HeaderApp, app)
	if c.user != "" {
		req.Header.Set(httpapi.HeaderUser, c.user)
	}
	if c.device != "" {
		req.Header.Set(httpapi.HeaderDevice, c.device)
	}
	switch {
	case c.secret != nil:
		ts, nonce := c.ts, c.nonce
		if ts.IsZero() {
			ts = time.Now()
		}
		if nonce == "" {
			nonce = newNonce()
		}
		req.Header.Set("Authorization", sign(c.secret, method, req.URL.RequestURI(), app, c.user, ts, nonce, body))
	case c.authz != "":
		req.Header.Set("Authorization", c.authz)
	}
	return req
}

// roundTrip sends req and returns its answer, with the body read, after
// checking that it came over the api's transport.
func (a *api) roundTrip(req *http.Request) (*http.Response, []byte) {
	a.t.Helper()
	resp, err := a.hc.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", req.Method, req.URL.RequestURI(), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatalf("%s %s: read answer: %v", req.Method, req.URL.RequestURI(), err)
	}
	if resp.Proto != a.proto {
		a.t.Fatalf("%s %s: answered over %s, want %s", req.Method, req.URL.RequestURI(), resp.Proto, a.proto)
	}
	return resp, b
}

// do sends a request and returns its answer with the body read.
func (a *api) do(method, path string, c cred, body string) (*http.Response, []byte) {
	a.t.Helper()
	return a.roundTrip(a.request(method, path, c, []byte(body)))
}

// call sends a request that must succeed with status, and decodes the
// answer into out after checking it against docs/openapi.yaml.
func (a *api) call(method, path string, c cred, body string, status int, out proto.Message) {
	a.t.Helper()
	resp, b := a.do(method, path, c, body)
	a.check(method, path, resp, b, status, out)
}

// fail sends a request that must be refused with status and code, and
// returns the reason.
func (a *api) fail(method, path string, c cred, body string, status int, code qimpb.Code) string {
	a.t.Helper()
	resp, b := a.do(method, path, c, body)
	return a.checkError(method, path, resp, b, status, code)
}

// check checks an answer's status and decodes its body into out, after
// checking it against the schema docs/openapi.yaml gives for the status.
func (a *api) check(method, path string, resp *http.Response, b []byte, status int, out proto.Message) {
	a.t.Helper()
	if resp.StatusCode != status {
		a.t.Fatalf("%s %s: %d %s, want %d", method, path, resp.StatusCode, b, status)
	}
	if err := a.doc.checkAnswer(method, path, resp, b, out); err != nil {
		a.t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, b, err)
	}
}

// checkError checks that an answer is the refusal status and code, and
// returns its reason.
func (a *api) checkError(method, path string, resp *http.Response, b []byte, status int, code qimpb.Code) string {
	a.t.Helper()
	var e qimpb.ApiError
	a.check(method, path, resp, b, status, &e)
	if e.Code != code || e.Reason == "" {
		a.t.Fatalf("%s %s: %d %s, want %s with a reason", method, path, resp.StatusCode, b, code)
	}
	return e.Reason
}

// send sends a message as c and returns its acknowledgement.
func (a *api) send(c cred, body string) *qimpb.MessageAck {
	a.t.Helper()
	var ack qimpb.MessageAck
	a.call("POST", "/v1/messages", c, body, http.StatusOK, &ack)
	return &ack
}

// history returns a page of a conversation read as c.
func (a *api) history(c cred, conv, query string) []*qimpb.ApiMessage {
	a.t.Helper()
	var page qimpb.HistoryPage
	a.call("GET", "/v1/conversations/"+conv+"/messages"+query, c, "", http.StatusOK, &page)
	return page.Messages
}

// inbox returns the inbox of c (GET /v1/conversations), by conversation
// key, after checking that it is sorted by key.
func (a *api) inbox(c cred) map[string]*qimpb.Conversation {
	a.t.Helper()
	var res qimpb.Inbox
	a.call("GET", "/v1/conversations", c, "", http.StatusOK, &res)
	m := make(map[string]*qimpb.Conversation)
	for i, conv := range res.Conversations {
		if i > 0 && res.Conversations[i-1].Conversation >= conv.Conversation {
			a.t.Fatalf("inbox of %s not sorted by key: %v", c.user, res.Conversations)
		}
		m[conv.Conversation] = conv
	}
	return m
}

// markRead marks conv read up to seq as c, and returns the answer.
func (a *api) markRead(c cred, conv string, seq uint64) *qimpb.ReadResult {
	a.t.Helper()
	var res qimpb.ReadResult
	a.call("POST", "/v1/conversations/"+conv+"/read", c, fmt.Sprintf(`{"seq":%d}`, seq), http.StatusOK, &res)
	return &res
}

// createGroup creates a group owned by owner and returns its id.
func (a *api) createGroup(owner, name string) string {
	a.t.Helper()
	var res qimpb.GroupResult
	a.call("POST", "/v1/groups", a.user(owner), `{"name":"`+name+`"}`, http.StatusCreated, &res)
	if res.Group.GetId() == "" || res.Group.Owner != owner || res.Group.Name != name {
		a.t.Fatalf("created group %v, want one owned by %s named %s", res.Group, owner, name)
	}
	return res.Group.Id
}

// join makes user a member of group, joining it by id.
func (a *api) join(user, group string) {
	a.t.Helper()
	var res qimpb.GroupResult
	a.call("POST", "/v1/groups/"+group+"/members", a.user(user), `{}`, http.StatusOK, &res)
}

// dial connects a QUIC device of user of demo/demo, closed when the test
// ends.
func (a *api) dial(user, device string) *client.Client {
	a.t.Helper()
	return testserver.Dial(a.t, a.srv.ClientConfig(user, device))
}

// next returns the next message pushed to dev, failing the test after 10 s.
func next(t *testing.T, dev *client.Client) *qimpb.Message {
	t.Helper()
	select {
	case m := <-dev.Messages():
		return m
	case <-dev.Done():
		t.Fatalf("%s/%s: session ended: %v", dev.User(), dev.Device(), dev.Err())
	case <-time.After(10 * time.Second):
		t.Fatalf("%s/%s: no message after 10 s", dev.User(), dev.Device())
	}
	return nil
}

// expectTexts checks that the next messages pushed to dev are the TXT
// messages texts, in that order.
func expectTexts(t *testing.T, dev *client.Client, texts ...string) []*qimpb.Message {
	t.Helper()
	var got []*qimpb.Message
	for _, want := range texts {
		m := next(t, dev)
		if txt := client.Text(m); txt != want {
			t.Fatalf("%s/%s: got %q (seq %d from %s), want %q", dev.User(), dev.Device(), txt, m.Seq, m.FromUser, want)
		}
		got = append(got, m)
	}
	return got
}

// eventually polls cond until it holds, failing the test after 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s: %s", what)
		}
	}
}

// ctx returns a context for a device's request, cancelled when the test
// ends.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// openAPI is what the tests read of docs/openapi.yaml: the answers of each
// operation and the schemas.
type openAPI struct {
	Paths      map[string]map[string]operation `yaml:"paths"`
	Components struct {
		Schemas map[string]*schema `yaml:"schemas"`
	} `yaml:"components"`
}

type operation struct {
	Responses map[string]struct {
		Content map[string]struct {
			Schema *schema `yaml:"schema"`
		} `yaml:"content"`
	} `yaml:"responses"`
}

type schema struct {
	Ref        string             `yaml:"$ref"`
	Type       string             `yaml:"type"`
	Format     string             `yaml:"format"`
	Enum       []string           `yaml:"enum"`
	Proto      string             `yaml:"x-proto"`
	Properties map[string]*schema `yaml:"properties"`
	Items      *schema            `yaml:"items"`
}

func loadOpenAPI(t *testing.T) *openAPI {
	t.Helper()
	b, err := os.ReadFile("../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc openAPI
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("docs/openapi.yaml: %v", err)
	}
	return &doc
}

// operation returns the documented operation of method on path (which may
// carry a query), or false if there is none: the path template that
// matches with the most literal segments.
func (d *openAPI) operation(method, path string) (operation, bool) {
	path, _, _ = strings.Cut(path, "?")
	segs := strings.Split(path, "/")
	best, bestLiterals := "", -1
	for tmpl := range d.Paths {
		ts := strings.Split(tmpl, "/")
		if len(ts) != len(segs) {
			continue
		}
		literals := 0
		for i, s := range ts {
			switch {
			case strings.HasPrefix(s, "{") && segs[i] != "":
			case s == segs[i]:
				literals++
			default:
				literals = -1
			}
			if literals < 0 {
				break
			}
		}
		if literals > bestLiterals {
			best, bestLiterals = tmpl, literals
		}
	}
	op, ok := d.Paths[best][strings.ToLower(method)]
	return op, ok
}

// checkAnswer checks a JSON answer against the schema the document gives
// for its operation and status (the "default" one for a status it does not
// list; ApiError for a path it does not list), and decodes it into out,
// which must be the schema's x-proto message: protojson refuses unknown
// fields, and every property of the schema must be written (the API writes
// zero values), with its documented JSON type (64-bit integers as strings).
func (d *openAPI) checkAnswer(method, path string, resp *http.Response, b []byte, out proto.Message) error {
	name := "ApiError"
	if op, ok := d.operation(method, path); ok {
		r, ok := op.Responses[strconv.Itoa(resp.StatusCode)]
		if !ok {
			r, ok = op.Responses["default"]
		}
		if !ok {
			return fmt.Errorf("docs/openapi.yaml lists no answer %d", resp.StatusCode)
		}
		c, ok := r.Content["application/json"]
		if !ok {
			return fmt.Errorf("docs/openapi.yaml lists no JSON answer %d", resp.StatusCode)
		}
		name = strings.TrimPrefix(c.Schema.Ref, "#/components/schemas/")
	}
	s := d.Components.Schemas[name]
	if s == nil {
		return fmt.Errorf("docs/openapi.yaml has no schema %q", name)
	}
	if got := string(out.ProtoReflect().Descriptor().FullName()); got != s.Proto {
		return fmt.Errorf("the answer is a %s (docs/openapi.yaml), not a %s", s.Proto, got)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		return fmt.Errorf("Content-Type %q, want application/json", ct)
	}
	if err := (protojson.UnmarshalOptions{}).Unmarshal(b, out); err != nil {
		return fmt.Errorf("does not decode as %s: %w", s.Proto, err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	return d.conforms(name, s, v)
}

// conforms checks a decoded JSON value against a schema.
func (d *openAPI) conforms(at string, s *schema, v any) error {
	if s.Ref != "" {
		if v == nil {
			return nil // a message field that is not set
		}
		name := strings.TrimPrefix(s.Ref, "#/components/schemas/")
		r := d.Components.Schemas[name]
		if r == nil {
			return fmt.Errorf("%s: no schema %q", at, name)
		}
		return d.conforms(at, r, v)
	}
	switch s.Type {
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: %v is not an object", at, v)
		}
		if s.Properties == nil {
			return nil
		}
		var missing, extra []string
		for p := range s.Properties {
			if _, ok := m[p]; !ok {
				missing = append(missing, p)
			}
		}
		for k := range m {
			if _, ok := s.Properties[k]; !ok {
				extra = append(extra, k)
			}
		}
		if len(missing) > 0 || len(extra) > 0 {
			sort.Strings(missing)
			sort.Strings(extra)
			return fmt.Errorf("%s: fields missing %v, not documented %v", at, missing, extra)
		}
		for k, ps := range s.Properties {
			if err := d.conforms(at+"."+k, ps, m[k]); err != nil {
				return err
			}
		}
	case "array":
		l, ok := v.([]any)
		if !ok {
			return fmt.Errorf("%s: %v is not an array", at, v)
		}
		for i, e := range l {
			if err := d.conforms(fmt.Sprintf("%s[%d]", at, i), s.Items, e); err != nil {
				return err
			}
		}
	case "string":
		str, ok := v.(string)
		if !ok {
			return fmt.Errorf("%s: %v is not a string", at, v)
		}
		if s.Format == "int64" || s.Format == "uint64" {
			if _, err := strconv.ParseInt(str, 10, 64); err != nil && s.Format == "int64" {
				return fmt.Errorf("%s: %q is not an int64", at, str)
			}
			if _, err := strconv.ParseUint(str, 10, 64); err != nil && s.Format == "uint64" {
				return fmt.Errorf("%s: %q is not a uint64", at, str)
			}
		}
		if len(s.Enum) > 0 && !slices.Contains(s.Enum, str) {
			return fmt.Errorf("%s: %q is not one of %v", at, str, s.Enum)
		}
	case "integer":
		if _, ok := v.(float64); !ok {
			return fmt.Errorf("%s: %v is not a number", at, v)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			return fmt.Errorf("%s: %v is not a boolean", at, v)
		}
	}
	return nil
}

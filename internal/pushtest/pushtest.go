// Package pushtest runs a push gateway for tests: a real HTTP server on
// 127.0.0.1 that checks each notification's signature and idempotency key
// and records what it got, as an application's gateway in front of APNs
// or FCM would.
package pushtest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/push"
)

// Drop is the status SetAnswer takes to make the gateway close each
// connection without an answer, like a gateway that crashed mid-request.
const Drop = -1

// Gateway is a running test gateway. Its methods are safe for concurrent
// use.
type Gateway struct {
	// URL is where the gateway listens: qimd's push webhook.
	URL string

	srv *httptest.Server

	mu       sync.Mutex
	secret   []byte
	answer   int                                // status of the next answers; Drop: none
	requests int                                // requests received
	bad      []string                           // why requests were refused (signature, body)
	accepted map[string]int                     // 2xx answers, by idempotency key
	first    map[string]*qimpb.PushNotification // the first accepted copy, by key
	order    []string                           // keys, in order of first acceptance
}

// Start starts a gateway that checks signatures with secret and answers
// 200, and closes it when the test ends.
func Start(t testing.TB, secret []byte) *Gateway {
	t.Helper()
	g := &Gateway{secret: secret, answer: http.StatusOK, accepted: map[string]int{}, first: map[string]*qimpb.PushNotification{}}
	g.srv = httptest.NewServer(http.HandlerFunc(g.serve)) // 127.0.0.1
	g.URL = g.srv.URL + "/push"
	t.Cleanup(g.srv.Close)
	return g
}

// SetSecret changes the secret the gateway checks signatures with.
func (g *Gateway) SetSecret(secret []byte) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.secret = secret
}

// SetAnswer makes the gateway answer every valid notification with status
// from now on (200 is up; 503 is down; Drop closes the connection). It
// records only the notifications it answers with a 2xx.
func (g *Gateway) SetAnswer(status int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.answer = status
}

func (g *Gateway) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.requests++
	if err != nil {
		return // the client gave up on the request (qimd stopping): not a bad one
	}
	if err := push.Verify(g.secret, r.Header.Get(push.SignatureHeader), body, time.Now(), push.DefaultTolerance); err != nil {
		g.bad = append(g.bad, err.Error())
		http.Error(w, "signature", http.StatusUnauthorized)
		return
	}
	n, err := push.Unmarshal(body)
	switch {
	case err != nil:
		g.bad = append(g.bad, "decode: "+err.Error())
	case n.GetId() == "" || n.GetId() != r.Header.Get(push.IdempotencyHeader):
		g.bad = append(g.bad, "idempotency key "+r.Header.Get(push.IdempotencyHeader)+" for id "+n.GetId())
	case r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json":
		g.bad = append(g.bad, "request "+r.Method+" "+r.Header.Get("Content-Type"))
	}
	switch {
	case g.answer == Drop:
		panic(http.ErrAbortHandler) // closes the connection without an answer
	case g.answer/100 != 2:
		w.WriteHeader(g.answer)
		return
	}
	if n != nil && n.GetId() != "" {
		if g.accepted[n.GetId()]++; g.accepted[n.GetId()] == 1 {
			g.first[n.GetId()] = n
			g.order = append(g.order, n.GetId())
		}
	}
	w.WriteHeader(g.answer)
}

// Notifications returns the distinct notifications accepted, one per
// idempotency key, in the order they first arrived.
func (g *Gateway) Notifications() []*qimpb.PushNotification {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]*qimpb.PushNotification, len(g.order))
	for i, id := range g.order {
		out[i] = g.first[id]
	}
	return out
}

// Duplicates returns the idempotency keys accepted more than once: the
// copies a real gateway drops. Delivery is at least once, so a server
// that gave up on a request the gateway was still handling (it stopped,
// or the request timed out) sends it again; a test that wants none makes
// sure such requests are over, and answered with a failure, before the
// gateway accepts.
func (g *Gateway) Duplicates() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var dups []string
	for id, n := range g.accepted {
		if n > 1 {
			dups = append(dups, id)
		}
	}
	slices.Sort(dups)
	return dups
}

// Requests returns how many requests the gateway received, answered or
// not.
func (g *Gateway) Requests() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.requests
}

// Bad returns why requests were refused or malformed: none for a server
// that signs and encodes every notification right.
func (g *Gateway) Bad() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.bad)
}

// Wait waits until the gateway has accepted n distinct notifications and
// returns them, failing the test after timeout.
func (g *Gateway) Wait(t testing.TB, n int, timeout time.Duration) []*qimpb.PushNotification {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := g.Notifications()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("pushtest: %d notifications after %v, want %d (requests %d, refused %q)", len(got), timeout, n, g.Requests(), g.Bad())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

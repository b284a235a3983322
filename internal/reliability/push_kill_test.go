package reliability_test

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/push"
	"github.com/qim-im/qim/store"
)

// TestPushKill9 kills qimd with SIGKILL twice while HTTP senders write to
// zoe, who never connects, and qimd's push worker (--push-webhook, a
// 200ms delay, a 2s lease) notifies a gateway that takes 10 to 60ms per
// request: each kill comes while requests are in flight, with other jobs
// claimed and not yet sent. The gateway also answers 503 for a while.
// Afterwards every stored message has a notification for zoe at the
// gateway, under its idempotency key, and no notification names a message
// that was not stored. Copies of one key are allowed (at least once) and
// counted. QIM_CRASH_SEED replays a run's kill schedule.
func TestPushKill9(t *testing.T) {
	const senders = 2
	const kills = 2
	const user = "zoe"
	rng := crashRand(t)
	begin := time.Now()

	secretFile := filepath.Join(t.TempDir(), "push.secret")
	secret := []byte(fmt.Sprintf("%x", rng.Uint64()) + "-push-kill9-secret")
	if err := os.WriteFile(secretFile, append(secret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	gw := startKillGateway(t, secret)

	p := newQimd(t, qimdBin.Path(t), t.TempDir(), freeUDPAddr(t))
	p.args = []string{"--push-webhook", gw.url, "--push-secret-file", secretFile, "--push-delay", "200ms", "--push-lease", "2s"}
	p.start()
	api := newHTTPAPI(t, p)

	ss := make([]*httpSender, senders)
	for i := range ss {
		name := fmt.Sprintf("p%d", i)
		ss[i] = &httpSender{api: api, name: name, to: user, token: api.token(name), sent: make(map[string]sentMsg)}
	}
	stop := make(chan struct{})
	var sending sync.WaitGroup
	for _, s := range ss {
		sending.Go(func() { s.run(stop) })
	}
	for k := range kills {
		// Each server sends some notifications, then is killed at a
		// random moment while the gateway is handling requests.
		mark := gw.stats().accepted
		eventually(t, 30*time.Second, func() string { return fmt.Sprintf("notifications from the restarted server (%+v)", gw.stats()) },
			func() bool { return gw.stats().accepted >= mark+10 })
		time.Sleep(time.Duration(rng.Int64N(int64(500 * time.Millisecond))))
		eventually(t, 10*time.Second, func() string { return "a request in flight at the gateway" }, func() bool { return gw.stats().inFlight > 0 })
		inFlight := gw.stats().inFlight
		p.kill()
		killed := time.Now()
		time.Sleep(time.Duration(rng.Int64N(int64(200 * time.Millisecond))))
		p.start()
		t.Logf("kill %d: %d requests in flight at the gateway; answering again after %v", k+1, inFlight, time.Since(killed).Round(time.Millisecond))
		if k == 0 {
			// The gateway fails for a while: the jobs back off and retry.
			gw.setDown(true)
			mark := gw.stats().refused
			eventually(t, 10*time.Second, func() string { return "503 answers" }, func() bool { return gw.stats().refused >= mark+5 })
			time.Sleep(time.Second)
			gw.setDown(false)
			t.Logf("the gateway answered 503 to %d requests", gw.stats().refused-mark)
		}
	}
	stopSenders(t, ss, stop, &sending)

	// What was stored, read back by the senders (zoe reads nothing: a
	// read could count as receiving).
	sent := make(map[string]sentMsg)
	var ids, retried, dupAcks int
	for _, s := range ss {
		if s.err != nil {
			t.Errorf("%s: %v", s.name, s.err)
		}
		for cid, m := range s.sent {
			sent[cid] = m
		}
		ids += len(s.sent)
		retried += s.retried
		dupAcks += s.dups
	}
	stored := make(map[string]*qimpb.Message) // by idempotency key
	var hist audit
	for _, s := range ss {
		conv := store.DirectConv(s.name, user)
		ms := api.history(conv, s.name)
		hist.add(checkConv(t, "HTTP history", conv, ms, sent))
		for _, m := range ms {
			stored[push.IdempotencyKey(store.AppID("demo", "demo"), m.GetId(), user)] = m
		}
	}
	if !hist.clean() || hist.unacked != 0 {
		t.Errorf("history: %s", hist)
	}

	// Every stored message gets its notification.
	missing := func() []string {
		var keys []string
		for key := range stored {
			if gw.count(key) == 0 {
				keys = append(keys, key)
			}
		}
		return keys
	}
	waited := time.Now()
	eventually(t, 30*time.Second, func() string {
		return fmt.Sprintf("a notification of every stored message: %d of %d missing (%+v)", len(missing()), len(stored), gw.stats())
	}, func() bool { return len(missing()) == 0 })
	t.Logf("the last notification arrived %v after the senders stopped", time.Since(waited).Round(time.Millisecond))

	st := gw.stats()
	var dupKeys, copies int
	for key, n := range gw.counts() {
		m, ok := stored[key]
		if !ok {
			t.Errorf("notification %s (%v) of no stored message", key, gw.note(key))
			continue
		}
		note := gw.note(key)
		if note.GetUser() != user || note.GetMessageId() != m.GetId() || note.GetSeq() != m.GetSeq() ||
			note.GetConversation() != store.DirectConv(m.GetFromUser(), user) || note.GetFromUser() != m.GetFromUser() {
			t.Errorf("notification %s is %v, for message %v", key, note, m)
		}
		if n > 1 {
			dupKeys++
			copies += n - 1
		}
	}
	if len(st.bad) > 0 {
		t.Errorf("the gateway refused %d requests: %q", len(st.bad), st.bad[:min(len(st.bad), 5)])
	}
	t.Logf("push kill figures: kills %d, messages stored %d (sent %d, %d requests retried, %d answered as duplicates); gateway: %d requests (%d abandoned by a killed qimd), %d answered 503, %d notifications accepted, %d keys, %d keys accepted more than once (%d extra copies)",
		kills, len(stored), ids, retried, dupAcks, st.requests, st.abandoned, st.refused, st.accepted, len(gw.counts()), dupKeys, copies)

	if err := p.stop(); err != nil {
		t.Errorf("graceful stop after the run: %v", err)
	}
	checkQimdLog(t, p)
	t.Logf("TestPushKill9 took %v", time.Since(begin).Round(time.Millisecond))
}

// killGateway is a push gateway that takes 10 to 60ms per request, so
// that a killed qimd leaves requests in flight, checks each request's
// signature and idempotency key, and records every valid notification it
// accepts. A request whose sender went away before the answer (a killed
// qimd) is not recorded: the notification counts only once qimd sends it
// again, after the lease of its job. Its methods are safe for concurrent
// use.
type killGateway struct {
	url    string
	secret []byte // static

	mu       sync.Mutex
	down     bool // answer 503
	st       gatewayStats
	accepted map[string]int                     // by idempotency key
	first    map[string]*qimpb.PushNotification // by idempotency key
}

// gatewayStats are the counters of a killGateway.
type gatewayStats struct {
	requests, inFlight, refused, accepted int
	abandoned                             int      // valid requests whose sender went away before the answer
	bad                                   []string // why requests were refused
}

// startKillGateway starts a gateway on 127.0.0.1 that checks signatures
// with secret, and closes it when the test ends.
func startKillGateway(t *testing.T, secret []byte) *killGateway {
	g := &killGateway{secret: secret, accepted: make(map[string]int), first: make(map[string]*qimpb.PushNotification)}
	srv := httptest.NewServer(http.HandlerFunc(g.serve))
	t.Cleanup(srv.Close)
	g.url = srv.URL + "/push"
	return g
}

func (g *killGateway) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	g.mu.Lock()
	g.st.requests++
	g.st.inFlight++
	down := g.down
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.st.inFlight--
		g.mu.Unlock()
	}()
	if err != nil {
		return // the sender went away before the whole request arrived
	}
	time.Sleep(time.Duration(10+rand.IntN(50)) * time.Millisecond)
	bad := func(why string) {
		g.mu.Lock()
		g.st.bad = append(g.st.bad, why)
		g.mu.Unlock()
		http.Error(w, why, http.StatusBadRequest)
	}
	if err := push.Verify(g.secret, r.Header.Get(push.SignatureHeader), body, time.Now(), push.DefaultTolerance); err != nil {
		bad("signature: " + err.Error())
		return
	}
	n, err := push.Unmarshal(body)
	switch {
	case err != nil:
		bad("decode: " + err.Error())
		return
	case n.GetId() == "" || n.GetId() != r.Header.Get(push.IdempotencyHeader):
		bad("idempotency key " + r.Header.Get(push.IdempotencyHeader) + " for id " + n.GetId())
		return
	case n.GetId() != push.IdempotencyKey(store.AppID(n.GetOrg(), n.GetAppkey()), n.GetMessageId(), n.GetUser()):
		bad("id " + n.GetId() + " is not the key of its message and user")
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if r.Context().Err() != nil {
		// The sender was killed mid-request: it never learns of an
		// answer, so the notification counts only when sent again.
		g.st.abandoned++
		return
	}
	if down {
		g.st.refused++
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	g.st.accepted++
	if g.accepted[n.GetId()]++; g.accepted[n.GetId()] == 1 {
		g.first[n.GetId()] = n
	}
	w.WriteHeader(http.StatusOK)
}

// setDown makes the gateway answer 503 (down) or accept (up).
func (g *killGateway) setDown(down bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.down = down
}

func (g *killGateway) stats() gatewayStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.st
	st.bad = slices.Clone(st.bad)
	return st
}

// count returns how many times the notification key was accepted.
func (g *killGateway) count(key string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.accepted[key]
}

// counts returns how many times each key was accepted.
func (g *killGateway) counts() map[string]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[string]int, len(g.accepted))
	for k, n := range g.accepted {
		out[k] = n
	}
	return out
}

// note returns the first accepted notification of key.
func (g *killGateway) note(key string) *qimpb.PushNotification {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.first[key]
}

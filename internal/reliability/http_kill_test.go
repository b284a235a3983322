package reliability_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/qim-im/qim/auth"
	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/daemon"
	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// TestHTTPSendKill9 kills qimd with SIGKILL at random moments while HTTP
// senders POST /v1/messages to bob, whose device (the client library, with
// Reconnect) stays connected through the kills. A sender retries each
// message with the same client_msg_id on any failure (refused or reset
// connection, 5xx) until it is answered. Afterwards every answered message
// reached bob's device once, in order, with dense seqs and the id and seq
// of its answer, and the history endpoint lists each client_msg_id once.
// QIM_CRASH_SEED replays a run's kill schedule.
func TestHTTPSendKill9(t *testing.T) {
	const senders = 4
	const kills = 3
	rng := crashRand(t)
	begin := time.Now()

	p := newQimd(t, qimdBin.Path(t), t.TempDir(), freeUDPAddr(t))
	p.start()
	api := newHTTPAPI(t, p)

	// bob's device, reconnecting by itself after each kill.
	bobCfg := p.config("bob", api.token("bob"), "phone")
	bobCfg.Reconnect = true
	bobCfg.ReconnectMax = 300 * time.Millisecond
	// Noticing a killed server sooner than the other devices of the
	// package: each kill is to hit a session of bob's device.
	bobCfg.QUICConfig.MaxIdleTimeout = time.Second
	bobCfg.QUICConfig.KeepAlivePeriod = 250 * time.Millisecond
	var sessions atomic.Int64
	bobCfg.OnState = func(s client.State) {
		if s == client.Connected {
			sessions.Add(1)
		}
	}
	bob := newCollector(dial(t, bobCfg))

	ss := make([]*httpSender, senders)
	for i := range ss {
		name := fmt.Sprintf("h%d", i)
		ss[i] = &httpSender{api: api, name: name, to: "bob", token: api.token(name), sent: make(map[string]sentMsg)}
	}
	stop := make(chan struct{})
	var sending sync.WaitGroup
	for _, s := range ss {
		sending.Go(func() { s.run(stop) })
	}
	acks := func() int64 {
		var n int64
		for _, s := range ss {
			n += s.acks.Load()
		}
		return n
	}
	for k := range kills {
		// Each server answers some sends, and has bob's device connected,
		// before it is killed at a random moment.
		mark := acks()
		eventually(t, 30*time.Second, func() string {
			return fmt.Sprintf("acks from the restarted server (%d, mark %d) and bob's device connected to it (sessions %d)", acks(), mark, sessions.Load())
		}, func() bool { return acks() >= mark+senders && sessions.Load() > int64(k) })
		time.Sleep(time.Duration(rng.Int64N(int64(800 * time.Millisecond))))
		before := acks()
		p.kill()
		killed := time.Now()
		time.Sleep(time.Duration(rng.Int64N(int64(200 * time.Millisecond))))
		p.start()
		t.Logf("kill %d: %d answered before it (%d by this server); answering again after %v",
			k+1, before, before-mark, time.Since(killed).Round(time.Millisecond))
	}
	// Every sender gets something through the last server, then stops.
	stopSenders(t, ss, stop, &sending)

	sent := make(map[string]sentMsg)
	want := make(map[string]int) // messages per conversation
	var ids, attempts, retried, dups int
	for _, s := range ss {
		if s.err != nil {
			t.Errorf("%s: %v", s.name, s.err)
		}
		for cid, m := range s.sent {
			sent[cid] = m
			want[m.conv]++
		}
		ids += len(s.sent)
		attempts += s.attempts
		retried += s.retried
		dups += s.dups
	}

	// bob's device got every message once, in order.
	eventually(t, 30*time.Second, func() string { return "bob's device to catch up: " + bob.progress(want) }, func() bool {
		return bob.caughtUp(want)
	})
	time.Sleep(200 * time.Millisecond) // a moment for copies to show
	bob.c.Close()
	bob.wait()
	var total audit
	for conv := range want {
		total.add(checkConv(t, "bob/phone", conv, bob.messages(conv), sent))
	}
	// And the history endpoint, as bob.
	var hist audit
	for conv := range want {
		hist.add(checkConv(t, "HTTP history", conv, api.history(conv, "bob"), sent))
	}
	t.Logf("HTTP kill figures: kills %d, senders %d, sent %d (%d requests, %d failed and retried with the same client_msg_id), answered %d (%d as duplicates of a stored earlier attempt)",
		kills, senders, ids, attempts, retried, len(sent), dups)
	t.Logf("bob's device (%d sessions): %s", sessions.Load(), total)
	t.Logf("history endpoint: %s", hist)
	if !total.clean() || total.unacked != 0 {
		t.Errorf("bob's device: %s", total)
	}
	if !hist.clean() || hist.unacked != 0 {
		t.Errorf("history: %s", hist)
	}
	if err := p.stop(); err != nil {
		t.Errorf("graceful stop after the run: %v", err)
	}
	checkQimdLog(t, p)
	t.Logf("TestHTTPSendKill9 took %v", time.Since(begin).Round(time.Millisecond))
}

// crashRand returns the random source of a kill schedule, seeded from
// QIM_CRASH_SEED or the clock, and logs the seed.
func crashRand(t *testing.T) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("QIM_CRASH_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("QIM_CRASH_SEED: %v", err)
		}
	}
	t.Logf("QIM_CRASH_SEED=%d", seed)
	return rand.New(rand.NewPCG(seed, 0))
}

// checkQimdLog fails the test if any run of p wrote a race report or a
// panic.
func checkQimdLog(t *testing.T, p *qimdProc) {
	t.Helper()
	for _, bad := range []string{"DATA RACE", "panic:", "fatal error:"} {
		if strings.Contains(p.log.String(), bad) {
			t.Errorf("qimd wrote %q; its stderr:\n%s", bad, p.log.tail(8192))
		}
	}
}

// httpAPI is a client of qimd's HTTP API over HTTPS (TCP, the port number
// of its QUIC address). Its methods are safe for concurrent use.
type httpAPI struct {
	t      *testing.T
	base   string // https://127.0.0.1:PORT
	secret []byte // the demo application's
	hc     *http.Client
}

// newHTTPAPI returns a client of p's HTTP API, which trusts p's CA. p must
// have started.
func newHTTPAPI(t *testing.T, p *qimdProc) *httpAPI {
	t.Helper()
	secret, err := daemon.AppSecret(p.data, "demo", "demo")
	if err != nil {
		t.Fatal(err)
	}
	tlsConf := p.tlsConf.Clone() // ServerName localhost
	tlsConf.NextProtos = []string{"h2", "http/1.1"}
	tr := &http.Transport{TLSClientConfig: tlsConf, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	return &httpAPI{t: t, base: "https://" + p.addr, secret: secret, hc: &http.Client{Transport: tr, Timeout: 5 * time.Second}}
}

// token mints a token of the demo application for user.
func (a *httpAPI) token(user string) string {
	return auth.Mint(a.secret, "demo", "demo", user, time.Now().Add(time.Hour))
}

// errRetry marks an answer a sender retries: a 5xx or a 429.
var errRetry = errors.New("retry")

// do makes one request as user and returns the answer's body for a 200.
func (a *httpAPI) do(method, path, user, token string, body []byte) ([]byte, error) {
	req, err := http.NewRequest(method, a.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Qim-App", "demo/demo")
	req.Header.Set("Qim-User", user)
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := a.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	switch {
	case err != nil:
		return nil, err
	case res.StatusCode == http.StatusOK:
		return b, nil
	case res.StatusCode >= 500 || res.StatusCode == http.StatusTooManyRequests:
		return nil, fmt.Errorf("%w: %s %s: %d %s", errRetry, method, path, res.StatusCode, bytes.TrimSpace(b))
	default:
		return nil, fmt.Errorf("%s %s: %d %s", method, path, res.StatusCode, bytes.TrimSpace(b))
	}
}

// history reads conv as user through GET /v1/conversations/{conv}/messages,
// paging backwards 500 at a time, and returns it oldest first.
func (a *httpAPI) history(conv, user string) []*qimpb.Message {
	a.t.Helper()
	var all []*qimpb.Message
	before := uint64(0)
	for {
		path := "/v1/conversations/" + url.PathEscape(conv) + "/messages?limit=500"
		if before > 0 {
			path += "&before_seq=" + strconv.FormatUint(before, 10)
		}
		b, err := a.do(http.MethodGet, path, user, a.token(user), nil)
		if err != nil {
			a.t.Fatalf("history: %v", err)
		}
		var page qimpb.HistoryPage
		if err := protojson.Unmarshal(b, &page); err != nil {
			a.t.Fatalf("history: decode: %v", err)
		}
		if len(page.GetMessages()) == 0 {
			return all
		}
		var ms []*qimpb.Message
		for _, m := range page.GetMessages() {
			ms = append(ms, &qimpb.Message{Id: m.GetId(), Seq: m.GetSeq(), FromUser: m.GetFromUser(), ToUser: m.GetToUser(),
				ToGroup: m.GetToGroup(), ClientMsgId: m.GetClientMsgId()})
		}
		all = append(ms, all...)
		if before = ms[0].GetSeq(); before <= 1 {
			return all
		}
	}
}

// httpSender sends numbered messages to a user over HTTP, one at a time,
// retrying each with the same client_msg_id until it is answered.
type httpSender struct {
	// Static after creation.
	api   *httpAPI
	name  string // the sending user
	to    string // the addressee
	token string

	acks atomic.Int64 // messages answered; read by the test goroutine

	// Owned by run; read after it returns.
	sent     map[string]sentMsg // by client_msg_id
	attempts int                // requests made
	retried  int                // requests that failed, then made again
	dups     int                // answers with duplicate set
	err      error              // a refusal, or a message not answered in time
}

// run sends until stop is closed, finishing the message it is on. It runs
// in its own goroutine.
func (s *httpSender) run(stop <-chan struct{}) {
	conv := store.DirectConv(s.name, s.to)
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		cid := fmt.Sprintf("%s-%d", s.name, i)
		body, _ := json.Marshal(map[string]string{"to_user": s.to, "text": "http " + cid, "client_msg_id": cid})
		deadline := time.Now().Add(waitTime)
		for {
			s.attempts++
			b, err := s.api.do(http.MethodPost, "/v1/messages", s.name, s.token, body)
			if err == nil {
				var ack qimpb.MessageAck
				if err := protojson.Unmarshal(b, &ack); err != nil {
					s.err = fmt.Errorf("%s: decode the answer %q: %w", cid, b, err)
					return
				}
				s.sent[cid] = sentMsg{conv: conv, id: ack.GetId(), seq: ack.GetSeq(), dup: ack.GetDuplicate()}
				if ack.GetDuplicate() {
					s.dups++
				}
				s.acks.Add(1)
				break
			}
			var ne net.Error
			if !errors.Is(err, errRetry) && !errors.As(err, &ne) && !isConnErr(err) {
				s.err = fmt.Errorf("%s: %w", cid, err)
				return
			}
			if time.Now().After(deadline) {
				s.err = fmt.Errorf("%s: not answered in %v: %w", cid, waitTime, err)
				return
			}
			s.retried++
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// isConnErr reports whether err is a transport failure (a refused or
// reset connection, one closed mid-answer): what a killed server causes.
func isConnErr(err error) bool {
	var ue *url.Error
	return errors.As(err, &ue) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

// collector reads a device's messages, through its reconnections, until
// its Messages channel closes.
type collector struct {
	c    *client.Client
	done chan struct{} // closed when Messages is closed

	mu   sync.Mutex
	byCv map[string][]*qimpb.Message // arrival order; guarded by mu
}

// newCollector starts reading c's messages in a goroutine that ends when
// c's Messages closes (wait waits for it).
func newCollector(c *client.Client) *collector {
	k := &collector{c: c, done: make(chan struct{}), byCv: make(map[string][]*qimpb.Message)}
	go func() {
		defer close(k.done)
		for m := range c.Messages() {
			k.mu.Lock()
			k.byCv[convKey(m)] = append(k.byCv[convKey(m)], m)
			k.mu.Unlock()
		}
	}()
	return k
}

func (k *collector) wait() { <-k.done }

func (k *collector) messages(conv string) []*qimpb.Message {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]*qimpb.Message(nil), k.byCv[conv]...)
}

// caughtUp reports whether the device has the last message of every
// conversation of want (want[conv] is its count: its last seq).
func (k *collector) caughtUp(want map[string]int) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	for conv, n := range want {
		ms := k.byCv[conv]
		if len(ms) == 0 || ms[len(ms)-1].GetSeq() < uint64(n) {
			return false
		}
	}
	return true
}

func (k *collector) progress(want map[string]int) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var b strings.Builder
	for conv, n := range want {
		var last uint64
		if ms := k.byCv[conv]; len(ms) > 0 {
			last = ms[len(ms)-1].GetSeq()
		}
		fmt.Fprintf(&b, "%s %d/%d ", conv, last, n)
	}
	return b.String()
}

// stopSenders waits until every sender of ss has had 10 more messages
// answered (by the last server), then stops them (stop) and waits for them.
func stopSenders(t *testing.T, ss []*httpSender, stop chan struct{}, sending *sync.WaitGroup) {
	t.Helper()
	marks := make([]int64, len(ss))
	for i, s := range ss {
		marks[i] = s.acks.Load()
	}
	eventually(t, 30*time.Second, func() string { return "every sender to get answers from the last server" }, func() bool {
		for i, s := range ss {
			if s.acks.Load() < marks[i]+10 {
				return false
			}
		}
		return true
	})
	close(stop)
	sending.Wait()
}

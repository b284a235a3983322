package core

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
	"github.com/qim-im/qim/store/pebblestore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// memStore opens a Pebble store in memory, closed when the test ends.
func memStore(t testing.TB) *pebblestore.Store {
	t.Helper()
	st, err := pebblestore.Open("db", pebblestore.Options{FS: vfs.NewMem(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// newHub returns a hub with cfg, on an in-memory Pebble store unless
// cfg.Store is set, closed when the test ends.
func newHub(t testing.TB, cfg Config) *Hub {
	t.Helper()
	if cfg.Store == nil {
		cfg.Store = memStore(t)
	}
	h, err := NewHub(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// recorder is a Receiver that keeps every event it is given.
type recorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *recorder) Receive(ev Event) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
}

// msgs returns the stored messages received, in order.
func (r *recorder) msgs() []*qimpb.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*qimpb.Message
	for _, ev := range r.events {
		if ev.Msg != nil {
			out = append(out, ev.Msg)
		}
	}
	return out
}

// revoked returns the conversations revoked, in order.
func (r *recorder) revoked() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, ev := range r.events {
		if ev.Revoke != "" {
			out = append(out, ev.Revoke)
		}
	}
	return out
}

// listen registers a recorder for user of app on h's router.
func listen(t testing.TB, h *Hub, app, user string) *recorder {
	r := &recorder{}
	t.Cleanup(h.Router().Register(app, user, r))
	return r
}

func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("within 10 s: %s", what)
		}
	}
}

// text returns a TXT message from user's device to a user or a group
// ("g..." ids).
func text(from, to, txt string) *qimpb.Message {
	payload, _ := proto.Marshal(&qimpb.MessageTxt{Txt: txt})
	m := &qimpb.Message{FromUser: from, FromDevice: "d", Type: qimpb.MessageType_TXT, Payload: payload}
	if len(to) > 0 && to[0] == 'g' && len(to) == 17 {
		m.ToGroup = to
	} else {
		m.ToUser = to
	}
	return m
}

// send checks, submits and waits for one message, and returns its result.
func send(t testing.TB, h *Hub, app string, m *qimpb.Message) store.AppendResult {
	t.Helper()
	ctx := context.Background()
	conv, err := h.CheckMessage(ctx, app, m.FromUser, m)
	if err != nil {
		t.Fatalf("check %v: %v", m, err)
	}
	p, err := h.Submit(ctx, app, conv, m, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	res, err := p.Result()
	if err != nil {
		t.Fatalf("append %v: %v", m, err)
	}
	return res
}

// group runs a group request of user and fails the test on error.
func group(t testing.TB, h *Hub, app, user string, r *qimpb.GroupRequest) *qimpb.GroupResult {
	t.Helper()
	res, err := h.Group(context.Background(), app, user, r)
	if err != nil {
		t.Fatalf("%s: %v: %v", user, r.Op, err)
	}
	return res
}

// wantCode fails unless err maps to code.
func wantCode(t testing.TB, what string, err error, code qimpb.Code) {
	t.Helper()
	if got, reason := CodeOf(err); got != code {
		t.Fatalf("%s: %v (%s), want %v", what, got, reason, code)
	}
}

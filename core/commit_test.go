package core

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// gateStore holds the first Append until the test opens the gate, and
// records the size of every Append.
type gateStore struct {
	store.Store
	gate chan struct{}

	mu      sync.Mutex
	batches []int
	entered chan struct{} // closed when the first Append arrives
	once    sync.Once
}

func (s *gateStore) Append(ctx context.Context, msgs []store.Append) ([]store.AppendResult, error) {
	s.once.Do(func() { close(s.entered) })
	<-s.gate
	s.mu.Lock()
	s.batches = append(s.batches, len(msgs))
	s.mu.Unlock()
	return s.Store.Append(ctx, msgs)
}

// TestCommitterBatches holds the committer in its first store call while
// 100 more messages are submitted: they are then stored in batches of at
// most MaxBatch, and routed to both users in sequence order, each once.
func TestCommitterBatches(t *testing.T) {
	st := &gateStore{Store: memStore(t), gate: make(chan struct{}), entered: make(chan struct{})}
	h := newHub(t, Config{Store: st, MaxBatch: 32, SendRate: -1})
	alice, bob := listen(t, h, "app", "alice"), listen(t, h, "app", "bob")
	ctx := context.Background()
	submit := func(i int) *Pending {
		m := text("alice", "bob", fmt.Sprint("m", i))
		conv, err := h.CheckMessage(ctx, "app", "alice", m)
		if err != nil {
			t.Fatal(err)
		}
		p, err := h.Submit(ctx, "app", conv, m, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	pending := []*Pending{submit(0)}
	<-st.entered
	for i := 1; i <= 100; i++ {
		pending = append(pending, submit(i))
	}
	close(st.gate)
	for i, p := range pending {
		<-p.Done()
		res, err := p.Result()
		if err != nil || res.Msg.Seq != uint64(i+1) {
			t.Fatalf("message %d: seq %d, %v", i, res.Msg.GetSeq(), err)
		}
	}
	st.mu.Lock()
	batches := st.batches
	st.mu.Unlock()
	if fmt.Sprint(batches) != "[1 32 32 32 4]" {
		t.Errorf("store calls of %v messages, want [1 32 32 32 4]", batches)
	}
	for _, r := range []*recorder{alice, bob} {
		eventually(t, "101 messages routed", func() bool { return len(r.msgs()) == 101 })
		for i, m := range r.msgs() {
			if m.Seq != uint64(i+1) {
				t.Fatalf("routed message %d has seq %d", i, m.Seq)
			}
		}
	}
}

// TestRouteToUsersAndMembers checks who gets what: a 1:1 message reaches
// both users (the sender's other devices too), a group message every
// member and nobody else, each with its conversation and a shared frame
// that decodes to the message.
func TestRouteToUsersAndMembers(t *testing.T) {
	h := newHub(t, Config{SendRate: -1})
	rs := map[string]*recorder{}
	for _, u := range []string{"alice", "bob", "carol", "dave"} {
		rs[u] = listen(t, h, "app", u)
	}
	other := listen(t, h, "other-app", "bob")
	send(t, h, "app", text("alice", "bob", "hi bob"))
	for _, u := range []string{"alice", "bob"} {
		eventually(t, u+" gets the 1:1 message", func() bool { return len(rs[u].msgs()) == 1 })
	}
	g := group(t, h, "app", "alice", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_CREATE, Name: "g"}).Group.Id
	group(t, h, "app", "carol", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_JOIN, GroupId: g})
	send(t, h, "app", text("carol", g, "hi group"))
	for u, n := range map[string]int{"alice": 2, "carol": 1} {
		eventually(t, u+" gets the group message", func() bool { return len(rs[u].msgs()) == n })
	}
	if n := len(rs["bob"].msgs()); n != 1 {
		t.Errorf("bob, not a member, got %d messages", n)
	}
	if n := len(rs["dave"].msgs()) + len(other.msgs()); n != 0 {
		t.Errorf("dave and bob of another app got %d messages", n)
	}
	rs["alice"].mu.Lock()
	ev := rs["alice"].events[len(rs["alice"].events)-1]
	rs["alice"].mu.Unlock()
	if ev.Conv != store.GroupConv(g) || ev.Frame == nil {
		t.Fatalf("event conv %q frame %v", ev.Conv, ev.Frame)
	}
	b, err := ev.Frame.Bytes()
	want, _ := EncodePush(ev.Msg)
	if err != nil || string(b) != string(want) {
		t.Fatalf("shared frame %x, %v; want %x", b, err, want)
	}
	// Every routed frame was released: the hub's budget holds nothing.
	eventually(t, "the hub's budget empty after routing", func() bool {
		used, _ := h.BufferedBytes()
		return used == 0
	})
}

// TestRelay checks an unstored message: it reaches the online users with
// a timestamp and no seq, and nothing is stored.
func TestRelay(t *testing.T) {
	h := newHub(t, Config{})
	bob := listen(t, h, "app", "bob")
	m := text("alice", "bob", "typing")
	conv, err := h.CheckMessage(context.Background(), "app", "alice", m)
	if err != nil {
		t.Fatal(err)
	}
	ts := h.Relay(context.Background(), "app", conv, m, time.Time{})
	got := bob.msgs()
	if len(got) != 1 || got[0].Seq != 0 || got[0].Timestamp != ts || ts == 0 {
		t.Fatalf("bob got %v (ts %d)", got, ts)
	}
	if seq, err := h.Store().LastSeq(context.Background(), "app", conv); err != nil || seq != 0 {
		t.Fatalf("last seq %d, %v; want nothing stored", seq, err)
	}
}

// TestSubmitAfterClose checks that a message submitted to a closed hub is
// refused with STORE_UNAVAILABLE.
func TestSubmitAfterClose(t *testing.T) {
	h := newHub(t, Config{})
	h.Close()
	_, err := h.Submit(context.Background(), "app", store.DirectConv("a", "b"), text("a", "b", "x"), time.Time{})
	wantCode(t, "submit after Close", err, qimpb.Code_STORE_UNAVAILABLE)
}

// TestCommitterPushDelay checks the committer's outbox hook: with
// PushDelay set, each stored message gets one job, due PushDelay after the
// commit (by Config.Now); without it, or with a negative one, none.
func TestCommitterPushDelay(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	for _, tt := range []struct {
		name  string
		delay time.Duration
		jobs  bool
	}{
		{"off", 0, false},
		{"negative", -time.Second, false},
		{"30s", 30 * time.Second, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := memStore(t)
			h := newHub(t, Config{Store: st, SendRate: -1, PushDelay: tt.delay, Now: func() time.Time { return now }})
			ctx := t.Context()
			first := send(t, h, "app", text("alice", "bob", "one"))
			second := send(t, h, "app", text("bob", "alice", "two"))
			dup := text("bob", "alice", "two again")
			dup.ClientMsgId = "c1"
			send(t, h, "app", dup)
			dup = text("bob", "alice", "two again")
			dup.ClientMsgId = "c1"
			if res := send(t, h, "app", dup); !res.Duplicate {
				t.Fatalf("retry of c1 stored again: %v", res.Msg)
			}

			n, err := st.PushBacklog(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.jobs {
				if n != 0 {
					t.Errorf("PushDelay %v: %d outbox jobs, want none", tt.delay, n)
				}
				return
			}
			if n != 3 {
				t.Errorf("PushBacklog = %d, want 3 (one per stored message)", n)
			}
			due := now.Add(tt.delay)
			if early, err := st.ClaimPush(ctx, due.Add(-time.Millisecond), time.Minute, 10); err != nil || len(early) != 0 {
				t.Fatalf("ClaimPush before the delay: %v, %v; want none", early, err)
			}
			jobs, err := st.ClaimPush(ctx, due, time.Minute, 10)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, j := range jobs {
				got = append(got, fmt.Sprint(j.App, " ", j.Conv, " ", j.Seq))
			}
			conv := store.DirectConv("alice", "bob")
			want := []string{"app " + conv + " " + fmt.Sprint(first.Msg.Seq), "app " + conv + " " + fmt.Sprint(second.Msg.Seq), "app " + conv + " 3"}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("jobs due at commit+PushDelay: %v, want %v", got, want)
			}
		})
	}
}

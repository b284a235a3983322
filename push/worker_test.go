package push_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/internal/pushtest"
	"github.com/qim-im/qim/metrics"
	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/push"
	"github.com/qim-im/qim/store"
)

// users returns the users of notifications, sorted.
func users(ns []*qimpb.PushNotification) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.GetUser())
	}
	slices.Sort(out)
	return out
}

// checkClean fails the test if the gateway refused a request or accepted
// a notification twice.
func checkClean(t *testing.T, gw *pushtest.Gateway) {
	t.Helper()
	if bad := gw.Bad(); len(bad) > 0 {
		t.Errorf("gateway refused requests: %q", bad)
	}
	if dups := gw.Duplicates(); len(dups) > 0 {
		t.Errorf("notifications accepted more than once: %q", dups)
	}
}

func TestDirectMessageToOfflineUser(t *testing.T) {
	backends(t, func(t *testing.T, st store.Store) {
		gw := pushtest.Start(t, testSecret)
		m := metrics.New()
		cfg := fast(st, gw.URL)
		cfg.Metrics = m
		run(t, cfg)
		msg := appendMsg(t, st, text("alice", "bob", "", "hello bob"), time.Now())

		got := gw.Wait(t, 1, 10*time.Second)
		eventually(t, 5*time.Second, "the job leaves the outbox", func() bool { return backlog(t, st) == 0 })
		want := &qimpb.PushNotification{
			Id: push.IdempotencyKey(app, msg.Id, "bob"), Org: "acme", Appkey: "chat", User: "bob",
			Conversation: store.DirectConv("alice", "bob"), FromUser: "alice", Seq: msg.Seq, MessageId: msg.Id,
			Timestamp: msg.Timestamp, Type: qimpb.MessageType_TXT, Preview: "hello bob",
		}
		if len(got) != 1 || !proto.Equal(got[0], want) {
			t.Fatalf("notifications %v, want [%v]", got, want)
		}
		if n := gw.Requests(); n != 1 {
			t.Errorf("%d requests, want 1", n)
		}
		if v := sample(t, m, "qim_push_sent_total"); v != 1 {
			t.Errorf("qim_push_sent_total = %v, want 1", v)
		}
		checkClean(t, gw)
	})
}

func TestNoNotificationOnceAcknowledged(t *testing.T) {
	backends(t, func(t *testing.T, st store.Store) {
		gw := pushtest.Start(t, testSecret)
		ctx := context.Background()
		// Due in a moment, acknowledged by one of bob's devices before.
		msg := appendMsg(t, st, text("alice", "bob", "", "hi"), time.Now().Add(200*time.Millisecond))
		if err := st.SetAcked(ctx, app, "bob", "tablet", store.DirectConv("alice", "bob"), msg.Seq); err != nil {
			t.Fatal(err)
		}
		// And one to carol, who received nothing: the worker has run when
		// her notification is in.
		appendMsg(t, st, text("alice", "carol", "", "hi"), time.Now().Add(200*time.Millisecond))
		run(t, fast(st, gw.URL))

		gw.Wait(t, 1, 10*time.Second)
		eventually(t, 5*time.Second, "both jobs leave the outbox", func() bool { return backlog(t, st) == 0 })
		if u := users(gw.Notifications()); !slices.Equal(u, []string{"carol"}) {
			t.Errorf("notified %v, want [carol] only", u)
		}
		checkClean(t, gw)
	})
}

func TestGroupMessage(t *testing.T) {
	backends(t, func(t *testing.T, st store.Store) {
		gw := pushtest.Start(t, testSecret)
		ctx := context.Background()
		if err := st.CreateGroup(ctx, app, store.Group{ID: "team", Name: "Team", Owner: "alice", Created: time.Now().UnixMilli()}); err != nil {
			t.Fatal(err)
		}
		for _, u := range []string{"bob", "carol", "dave", "erin"} {
			if _, err := st.JoinGroup(ctx, app, "team", u, 0); err != nil {
				t.Fatal(err)
			}
		}
		msg := appendMsg(t, st, text("alice", "", "team", "lunch?"), time.Now().Add(200*time.Millisecond))
		// carol is online (acknowledged); erin left before the job came due.
		if err := st.SetAcked(ctx, app, "carol", "phone", store.GroupConv("team"), msg.Seq); err != nil {
			t.Fatal(err)
		}
		if _, err := st.LeaveGroup(ctx, app, "team", "erin"); err != nil {
			t.Fatal(err)
		}
		run(t, fast(st, gw.URL))

		gw.Wait(t, 2, 10*time.Second)
		eventually(t, 5*time.Second, "the job leaves the outbox", func() bool { return backlog(t, st) == 0 })
		got := gw.Notifications()
		if u := users(got); !slices.Equal(u, []string{"bob", "dave"}) {
			t.Errorf("notified %v, want [bob dave] (not the sender alice, not carol who has it, not erin who left)", u)
		}
		for _, n := range got {
			if n.ToGroup != "team" || n.Conversation != "g:team" || n.FromUser != "alice" || n.Id != push.IdempotencyKey(app, msg.Id, n.User) {
				t.Errorf("notification %v", n)
			}
		}
		checkClean(t, gw)
	})
}

func TestPreview(t *testing.T) {
	long := strings.Repeat("é", 150)
	img, _ := proto.Marshal(&qimpb.MessageImg{Url: "https://example.com/a.png"})
	for _, tt := range []struct {
		name    string
		msg     *qimpb.Message
		preview bool
		want    string
	}{
		{"text", text("alice", "bob", "", "see you"), true, "see you"},
		{"long text, cut at 100 characters", text("alice", "bob", "", long), true, strings.Repeat("é", 100)},
		{"image", &qimpb.Message{Type: qimpb.MessageType_IMAGE, Payload: img, FromUser: "alice", ToUser: "bob"}, true, "[image]"},
		{"preview off", text("alice", "bob", "", "secret plans"), false, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := pebble(t)
			gw := pushtest.Start(t, testSecret)
			cfg := fast(st, gw.URL)
			cfg.Preview = tt.preview
			run(t, cfg)
			appendMsg(t, st, tt.msg, time.Now())
			got := gw.Wait(t, 1, 10*time.Second)
			if got[0].Preview != tt.want {
				t.Errorf("preview %q, want %q", got[0].Preview, tt.want)
			}
			if got[0].Type != tt.msg.Type {
				t.Errorf("type %v, want %v", got[0].Type, tt.msg.Type)
			}
		})
	}
}

// TestGatewayDownWorkerRestarted: the gateway fails (503, then closes its
// connections) while jobs come due, the worker stops and another starts
// on the same store meanwhile: once the gateway is back, every
// notification arrives, and none is accepted twice.
func TestGatewayDownWorkerRestarted(t *testing.T) {
	backends(t, func(t *testing.T, st store.Store) {
		gw := pushtest.Start(t, testSecret)
		gw.SetAnswer(http.StatusServiceUnavailable)
		m := metrics.New()
		cfg := fast(st, gw.URL)
		cfg.Metrics = m
		stop := run(t, cfg)

		const n = 20
		want := map[string]bool{}
		for i := range n {
			to := []string{"bob", "carol", "dave"}[i%3]
			msg := appendMsg(t, st, text("alice", to, "", "message"), time.Now())
			want[push.IdempotencyKey(app, msg.Id, to)] = true
		}
		eventually(t, 10*time.Second, "every job fails at least once", func() bool { return sample(t, m, "qim_push_failures_total") >= n })
		gw.SetAnswer(pushtest.Drop)
		before := gw.Requests()
		eventually(t, 10*time.Second, "retries while the gateway drops connections", func() bool { return gw.Requests() >= before+n })
		stop()
		if b := backlog(t, st); b != n {
			t.Fatalf("backlog %d after the first worker stopped, want %d", b, n)
		}

		// The second worker fails too before the gateway comes back: a
		// request of the first that the gateway was still handling when
		// that worker gave up on it (at-least-once: the gateway may get a
		// notification again after an answer was lost) has been answered
		// by then, so that every copy the gateway accepts is a bug.
		run(t, fast(st, gw.URL))
		before = gw.Requests()
		eventually(t, 10*time.Second, "the second worker's retries", func() bool { return gw.Requests() >= before+n })
		gw.SetAnswer(http.StatusOK)
		got := gw.Wait(t, n, 20*time.Second)
		eventually(t, 5*time.Second, "the outbox empties", func() bool { return backlog(t, st) == 0 })
		for _, nt := range got {
			if !want[nt.Id] {
				t.Errorf("unexpected notification %v", nt)
			}
		}
		if len(gw.Notifications()) != n {
			t.Errorf("%d notifications, want %d", len(gw.Notifications()), n)
		}
		checkClean(t, gw)
	})
}

// TestLeaseExpiry: a job claimed by a worker that died stays in the
// outbox, and another takes it over when the lease ends.
func TestLeaseExpiry(t *testing.T) {
	st := pebble(t)
	gw := pushtest.Start(t, testSecret)
	msg := appendMsg(t, st, text("alice", "bob", "", "hi"), time.Now())
	// A worker that claimed the job and crashed.
	jobs, err := st.ClaimPush(context.Background(), time.Now(), 500*time.Millisecond, 10)
	if err != nil || len(jobs) != 1 {
		t.Fatalf("ClaimPush: %v, %v", jobs, err)
	}
	start := time.Now()
	run(t, fast(st, gw.URL))
	got := gw.Wait(t, 1, 10*time.Second)
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Errorf("sent %v after the claim, within its lease", d)
	}
	if got[0].Id != push.IdempotencyKey(app, msg.Id, "bob") {
		t.Errorf("notification %v", got[0])
	}
}

func TestGivingUp(t *testing.T) {
	for _, tt := range []struct {
		name   string
		answer int
		cfg    func(*push.Config)
		reason string
	}{
		{"gateway answers 400", http.StatusBadRequest, nil, "rejected"},
		{"gateway answers 404", http.StatusNotFound, nil, "rejected"},
		{"older than MaxAge", http.StatusServiceUnavailable, func(c *push.Config) {
			c.MaxAge = time.Hour
			c.Now = func() time.Time { return time.Now().Add(2 * time.Hour) }
		}, "expired"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := pebble(t)
			gw := pushtest.Start(t, testSecret)
			gw.SetAnswer(tt.answer)
			m := metrics.New()
			cfg := fast(st, gw.URL)
			cfg.Metrics = m
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			run(t, cfg)
			appendMsg(t, st, text("alice", "bob", "", "hi"), time.Now())
			eventually(t, 10*time.Second, "the job leaves the outbox", func() bool { return backlog(t, st) == 0 })
			if v := sample(t, m, "qim_push_dropped_total", "reason", tt.reason); v != 1 {
				t.Errorf("qim_push_dropped_total{reason=%q} = %v, want 1", tt.reason, v)
			}
			if v := sample(t, m, "qim_push_failures_total"); v != 0 {
				t.Errorf("qim_push_failures_total = %v, want 0: no retry", v)
			}
		})
	}
}

// TestRetryableAnswers: 408, 429 and 5xx are retried until the gateway
// accepts.
func TestRetryableAnswers(t *testing.T) {
	for _, status := range []int{http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			st := pebble(t)
			gw := pushtest.Start(t, testSecret)
			gw.SetAnswer(status)
			m := metrics.New()
			cfg := fast(st, gw.URL)
			cfg.Metrics = m
			run(t, cfg)
			appendMsg(t, st, text("alice", "bob", "", "hi"), time.Now())
			eventually(t, 10*time.Second, "two failed attempts", func() bool { return sample(t, m, "qim_push_failures_total") >= 2 })
			gw.SetAnswer(http.StatusOK)
			gw.Wait(t, 1, 10*time.Second)
			checkClean(t, gw)
		})
	}
}

func TestBacklogGauge(t *testing.T) {
	st := pebble(t)
	gw := pushtest.Start(t, testSecret)
	gw.SetAnswer(http.StatusServiceUnavailable)
	m := metrics.New()
	cfg := fast(st, gw.URL)
	cfg.Metrics = m
	stop := run(t, cfg)
	for range 3 {
		appendMsg(t, st, text("alice", "bob", "", "hi"), time.Now())
	}
	eventually(t, 5*time.Second, "qim_push_backlog at 3", func() bool { return sample(t, m, "qim_push_backlog") == 3 })
	gw.SetAnswer(http.StatusOK)
	gw.Wait(t, 3, 10*time.Second)
	eventually(t, 5*time.Second, "qim_push_backlog back to 0", func() bool { return sample(t, m, "qim_push_backlog") == 0 })
	stop()
	if v := sample(t, m, "qim_push_backlog"); v != -1 {
		t.Errorf("qim_push_backlog = %v after the worker stopped, want no gauge", v)
	}
}

func TestNewChecksConfig(t *testing.T) {
	st := pebble(t)
	for _, tt := range []struct {
		name string
		cfg  push.Config
	}{
		{"no store", push.Config{URL: "http://127.0.0.1:1/", Secret: testSecret}},
		{"no secret", push.Config{Store: st, URL: "http://127.0.0.1:1/"}},
		{"no URL", push.Config{Store: st, Secret: testSecret}},
		{"not http", push.Config{Store: st, URL: "ftp://127.0.0.1/", Secret: testSecret}},
		{"no host", push.Config{Store: st, URL: "http:///push", Secret: testSecret}},
	} {
		if _, err := push.New(tt.cfg); err == nil {
			t.Errorf("%s: New accepted %+v", tt.name, tt.cfg)
		}
	}
}

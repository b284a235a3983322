package daemon_test

import (
	"context"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/daemon"
	"github.com/qim-im/qim/internal/pgtest"
	"github.com/qim-im/qim/internal/pushtest"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/push"
	"github.com/qim-im/qim/store"
)

// pushServer starts a server that sends push notifications to gw with
// test-sized timings, and points gw at the secret the server created.
func pushServer(t *testing.T, gw *pushtest.Gateway, opts testserver.Options, change func(*daemon.Config)) *testserver.Server {
	t.Helper()
	opts.Configure = func(c *daemon.Config) {
		c.PushWebhook = gw.URL
		c.PushDelay = 300 * time.Millisecond
		c.PushWorker = push.Config{
			MinBackoff: 20 * time.Millisecond,
			MaxBackoff: 100 * time.Millisecond,
			Lease:      2 * time.Second,
			PollEvery:  20 * time.Millisecond,
		}
		if change != nil {
			change(c)
		}
	}
	srv := testserver.Start(t, opts)
	secret, err := os.ReadFile(daemon.PushSecretPath(srv.DataDir))
	if err != nil {
		t.Fatal(err)
	}
	gw.SetSecret([]byte(strings.TrimSpace(string(secret))))
	return srv
}

// outboxEmpty waits until the server's push outbox is empty: every job
// has been worked out.
func outboxEmpty(t *testing.T, srv *testserver.Server) {
	t.Helper()
	st := srv.Daemon().Hub().Store()
	eventually(t, 10*time.Second, "the push outbox empties", func() bool {
		n, err := st.PushBacklog(context.Background())
		return err == nil && n == 0
	})
}

// notified returns "user:preview" for each notification, sorted.
func notified(ns []*qimpb.PushNotification) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.User+":"+n.Preview)
	}
	slices.Sort(out)
	return out
}

func sendTo(t *testing.T, c *client.Client, to client.Peer, txt string) *qimpb.MessageAck {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := c.Send(ctx, to, client.Outgoing{Text: txt})
	if err != nil {
		t.Fatalf("send to %v: %v", to, err)
	}
	return ack
}

// TestPushOfflineNotOnline: a message to a user with no device connected
// brings one notification, signed with the secret the server created, with
// every field right; a message to a user whose device is connected (and
// so acknowledges it at once) brings none.
func TestPushOfflineNotOnline(t *testing.T) {
	gw := pushtest.Start(t, nil)
	srv := pushServer(t, gw, testserver.Options{}, nil)
	if fi, err := os.Stat(daemon.PushSecretPath(srv.DataDir)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("push secret file: %v, %v; want mode 0600", fi, err)
	}
	alice := testserver.Dial(t, srv.ClientConfig("alice", "phone"))
	bob := testserver.Dial(t, srv.ClientConfig("bob", "phone")) // online: receives and acknowledges

	sendTo(t, alice, client.ToUser("bob"), "are you there?")
	ack := sendTo(t, alice, client.ToUser("carol"), "hi carol")
	select {
	case m := <-bob.Messages():
		if client.Text(m) != "are you there?" {
			t.Fatalf("bob got %v", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("bob got nothing")
	}

	got := gw.Wait(t, 1, 10*time.Second)
	outboxEmpty(t, srv)
	got = gw.Notifications()
	want := &qimpb.PushNotification{
		Id: push.IdempotencyKey(store.AppID(daemon.DemoOrg, daemon.DemoAppkey), ack.Id, "carol"), Org: daemon.DemoOrg, Appkey: daemon.DemoAppkey,
		User: "carol", Conversation: store.DirectConv("alice", "carol"), FromUser: "alice", Seq: ack.Seq, MessageId: ack.Id,
		Timestamp: ack.Timestamp, Type: qimpb.MessageType_TXT, Preview: "hi carol",
	}
	if len(got) != 1 || got[0].String() != want.String() {
		t.Fatalf("notifications %v, want only %v", got, want)
	}
	if bad, dups := gw.Bad(), gw.Duplicates(); len(bad)+len(dups) > 0 {
		t.Errorf("refused %q, duplicates %q", bad, dups)
	}
}

// TestPushGroup: a group message wakes the offline members, not the
// sender (whose device only sends), nor a member whose device is
// connected; without previews, the
// notifications say who wrote, not what.
func TestPushGroup(t *testing.T) {
	gw := pushtest.Start(t, nil)
	srv := pushServer(t, gw, testserver.Options{}, func(c *daemon.Config) { c.PushNoPreview = true })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// alice's device only sends: none of hers receives the message, yet
	// she is not woken for her own message.
	aliceCfg := srv.ClientConfig("alice", "bot")
	aliceCfg.SendOnly = true
	alice := testserver.Dial(t, aliceCfg)
	bob := testserver.Dial(t, srv.ClientConfig("bob", "laptop"))
	g, err := alice.CreateGroup(ctx, "team")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinGroup(ctx, g.Id); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"carol", "dave"} {
		if err := alice.Invite(ctx, g.Id, u); err != nil {
			t.Fatal(err)
		}
	}
	ack := sendTo(t, alice, client.ToGroup(g.Id), "lunch at noon")
	select {
	case <-bob.Messages():
	case <-time.After(10 * time.Second):
		t.Fatal("bob got nothing")
	}
	gw.Wait(t, 2, 10*time.Second)
	outboxEmpty(t, srv)
	got := gw.Notifications()
	if n := notified(got); !slices.Equal(n, []string{"carol:", "dave:"}) {
		t.Fatalf("notified %q, want carol and dave, without preview", n)
	}
	for _, n := range got {
		if n.ToGroup != g.Id || n.FromUser != "alice" || n.Seq != ack.Seq || n.Conversation != store.GroupConv(g.Id) {
			t.Errorf("notification %v", n)
		}
	}
}

// TestPushAcrossRestart: the gateway is down (503, then closing its
// connections) while messages to offline users come due, and the server
// restarts meanwhile: once the gateway is back, every notification
// arrives, and the gateway accepts none twice. The backlog gauge counts
// the jobs waiting.
func TestPushAcrossRestart(t *testing.T) {
	t.Run("pebble", func(t *testing.T) { pushAcrossRestart(t, testserver.Options{Metrics: "127.0.0.1:0"}) })
	t.Run("postgres", func(t *testing.T) {
		pushAcrossRestart(t, testserver.Options{Metrics: "127.0.0.1:0", Postgres: pgtest.Database(t)})
	})
}

func pushAcrossRestart(t *testing.T, opts testserver.Options) {
	gw := pushtest.Start(t, nil)
	gw.SetAnswer(http.StatusServiceUnavailable)
	srv := pushServer(t, gw, opts, nil)
	alice := testserver.Dial(t, srv.ClientConfig("alice", "phone"))
	app := store.AppID(daemon.DemoOrg, daemon.DemoAppkey)
	const n = 12
	want := map[string]bool{}
	for i := range n {
		to := []string{"bob", "carol", "dave"}[i%3]
		ack := sendTo(t, alice, client.ToUser(to), "message")
		want[push.IdempotencyKey(app, ack.Id, to)] = true
	}
	alice.Close()
	eventually(t, 10*time.Second, "every job fails at least once", func() bool { return gw.Requests() >= n })
	if v := metricValue(t, srv.MetricsURL, "qim_push_backlog"); v != n {
		t.Errorf("qim_push_backlog = %v, want %d", v, n)
	}
	if v := metricValue(t, srv.MetricsURL, "qim_push_failures_total"); v < n {
		t.Errorf("qim_push_failures_total = %v, want at least %d", v, n)
	}

	gw.SetAnswer(pushtest.Drop)
	srv.Restart()
	before := gw.Requests()
	eventually(t, 10*time.Second, "retries after the restart", func() bool { return gw.Requests() >= before+n })
	gw.SetAnswer(http.StatusOK)

	got := gw.Wait(t, n, 20*time.Second)
	outboxEmpty(t, srv)
	if len(got) != n || len(gw.Notifications()) != n {
		t.Errorf("%d notifications, want %d", len(gw.Notifications()), n)
	}
	for _, nt := range got {
		if !want[nt.Id] {
			t.Errorf("unexpected notification %v", nt)
		}
	}
	if bad, dups := gw.Bad(), gw.Duplicates(); len(bad)+len(dups) > 0 {
		t.Errorf("refused %q, accepted twice %q", bad, dups)
	}
	eventually(t, 5*time.Second, "qim_push_backlog back to 0", func() bool { return metricValue(t, srv.MetricsURL, "qim_push_backlog") == 0 })
	if v := metricValue(t, srv.MetricsURL, "qim_push_sent_total"); v != n {
		t.Errorf("qim_push_sent_total = %v after the restart, want %d", v, n)
	}
}

// TestPushConfigErrors: a bad webhook or secret stops the start with one
// line.
func TestPushConfigErrors(t *testing.T) {
	empty := t.TempDir() + "/empty"
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		cfg  func(*daemon.Config)
		want string
	}{
		{"not a URL", func(c *daemon.Config) { c.PushWebhook = "localhost:8080" }, "gateway URL"},
		{"missing secret file", func(c *daemon.Config) { c.PushSecretFile = t.TempDir() + "/none" }, "push secret"},
		{"empty secret file", func(c *daemon.Config) { c.PushSecretFile = empty }, "is empty"},
		{"negative delay", func(c *daemon.Config) { c.PushDelay = -time.Second }, "push delay"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := daemon.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), NoSync: true, PushWebhook: "http://127.0.0.1:1/push"}
			tt.cfg(&cfg)
			d, err := daemon.Start(cfg)
			if err == nil {
				d.Close()
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q, want one line with %q", err, tt.want)
			}
		})
	}
}

// metricValue scrapes base+"/metrics" and returns the value of the
// unlabelled counter or gauge name, -1 if there is none.
func metricValue(t *testing.T, base, name string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range fams[name].GetMetric() {
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue()
		}
	}
	return -1
}

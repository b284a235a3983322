package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qim-im/qim/certs"
	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/daemon"
	"github.com/qim-im/qim/internal/pushtest"
	"github.com/qim-im/qim/internal/testserver"
)

// TestServePushWebhook runs `qimd serve --push-webhook URL --push-delay
// 200ms --push-no-preview` with the gateway down, sends messages to users
// who are offline, restarts qimd while the gateway is still down, then
// brings the gateway up (with qimd's default retry timings): every notification arrives once, signed with the
// secret qimd created in DATA/keys/push.secret, without a preview.
func TestServePushWebhook(t *testing.T) {
	data := t.TempDir()
	gw := pushtest.Start(t, nil)
	gw.SetAnswer(http.StatusServiceUnavailable)
	args := []string{"--data", data, "--push-webhook", gw.URL, "--push-delay", "200ms", "--push-no-preview"}
	addr, stop := serveQimd(t, args...)
	secret, err := os.ReadFile(filepath.Join(data, "keys", "push.secret"))
	if err != nil {
		t.Fatal(err)
	}
	gw.SetSecret([]byte(strings.TrimSpace(string(secret))))

	var token strings.Builder
	if err := run(t.Context(), []string{"qimd", "token", "--data", data, "--user", "alice"}, &token, io.Discard); err != nil {
		t.Fatalf("qimd token: %v", err)
	}
	tlsConf, err := certs.ClientTLS(filepath.Join(daemon.CertsDir(data), certs.CACertFile), false, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	alice := testserver.Dial(t, client.Config{Addr: addr, TLSConfig: tlsConf, Org: daemon.DemoOrg, Appkey: daemon.DemoAppkey,
		User: "alice", Token: strings.TrimSpace(token.String()), Device: "phone"})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	for _, to := range []string{"bob", "carol", "bob"} {
		if _, err := alice.Send(ctx, client.ToUser(to), client.Outgoing{Text: "hello " + to}); err != nil {
			t.Fatal(err)
		}
	}
	alice.Close()
	for deadline := time.Now().Add(10 * time.Second); gw.Requests() < 3; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests to the gateway, want 3 failed ones", gw.Requests())
		}
	}
	if err := stop(); err != nil {
		t.Fatalf("qimd serve: %v", err)
	}

	// The restarted qimd fails too before the gateway comes back, so that
	// any request of the first one still in the gateway's hands is over.
	before := gw.Requests()
	serveQimd(t, args...)
	for deadline := time.Now().Add(10 * time.Second); gw.Requests() < before+3; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests to the gateway after the restart, want 3 failed ones", gw.Requests()-before)
		}
	}
	gw.SetAnswer(http.StatusOK)
	got := gw.Wait(t, 3, 20*time.Second)
	for _, n := range got {
		if n.FromUser != "alice" || n.Preview != "" || (n.User != "bob" && n.User != "carol") {
			t.Errorf("notification %v", n)
		}
	}
	if bad, dups := gw.Bad(), gw.Duplicates(); len(bad)+len(dups) > 0 {
		t.Errorf("refused %q, accepted twice %q", bad, dups)
	}
}

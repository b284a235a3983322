package daemon_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.uber.org/goleak"

	"github.com/qim-im/qim/auth"
	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/daemon"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// eventually polls cond until it holds, failing the test after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, what)
		}
	}
}

// start starts a daemon on data, logging into log, and closes it when the
// test ends.
func start(t *testing.T, data string, log *testserver.Buffer) *daemon.Daemon {
	t.Helper()
	d, err := daemon.Start(daemon.Config{Listen: "127.0.0.1:0", DataDir: data, NoSync: true,
		Logger: slog.New(slog.NewTextHandler(log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestDataDirOwnerOnly starts a server on a data directory that already
// existed with mode 0755 and held a world-readable file: before, the store,
// certificates and directory stayed readable by every local user. Now
// everything in it is owner-only, and the server warns that it tightened
// them.
func TestDataDirOwnerOnly(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "notes"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	var log testserver.Buffer
	d := start(t, data, &log)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "readable by other users") {
		t.Errorf("no warning about the loose permissions in the log:\n%s", log.String())
	}
	n := 0
	filepath.WalkDir(data, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if perm := info.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("%s: mode %v", path, perm)
		}
		n++
		return nil
	})
	if n < 10 {
		t.Errorf("only %d paths in the data directory", n)
	}
}

// TestNoSecretsInStore starts a server on a store where an earlier version
// had copied the demo application's secret, and checks that afterwards no
// key or value of the store contains the secret: it was copied there on
// every start.
func TestNoSecretsInStore(t *testing.T) {
	data := t.TempDir()
	secret, err := daemon.CreateApp(data, daemon.DemoOrg, daemon.DemoAppkey)
	if err != nil {
		t.Fatal(err)
	}
	storeDir := filepath.Join(data, "store")
	db, err := pebble.Open(storeDir, &pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// An app record of the earlier versions: "a" 0 APP 0 "app" -> record.
	legacy := append([]byte{1, 4}, "demo"...)
	legacy = append(append(legacy, 4), "demo"...)
	legacy = append(append(legacy, byte(len(secret))), secret...)
	if err := db.Set([]byte("a\x00demo/demo\x00app"), legacy, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	var log testserver.Buffer
	d := start(t, data, &log)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "deleted application secrets") {
		t.Errorf("no warning about the deleted secrets in the log:\n%s", log.String())
	}
	db, err = pebble.Open(storeDir, &pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	it, err := db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		if bytes.Contains(it.Key(), secret) || bytes.Contains(it.Value(), secret) {
			t.Errorf("the store holds the secret under %q", it.Key())
		}
	}
}

// endedWith waits until c's session ends and checks its code.
func endedWith(t *testing.T, c *client.Client, code qimpb.Code, within time.Duration) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(within):
		t.Fatalf("%s/%s: session still open after %v", c.User(), c.Device(), within)
	}
	if err := c.Err(); !errors.Is(err, &client.Error{Code: code}) {
		t.Fatalf("%s/%s: session ended with %v, want %v", c.User(), c.Device(), err, code)
	}
}

// TestAppRevocation removes or rotates an application's secret while one
// of its devices is connected. The server must end the session
// (UNAUTHENTICATED) by itself within its poll, or at once when told over
// the admin socket, and refuse the old token, also after a restart: the
// secret used to be copied into the store, and an old token still
// connected and sent after the file was deleted and the server restarted.
func TestAppRevocation(t *testing.T) {
	for _, tt := range []struct {
		name   string
		change func(data string) error
		admin  bool // tell the server over the admin socket
	}{
		{"remove, noticed by the poll", func(data string) error { return daemon.RemoveApp(data, "acme", "chat") }, false},
		{"rotate, told over the admin socket", func(data string) error {
			_, err := daemon.RotateApp(data, "acme", "chat")
			return err
		}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := testserver.Start(t, testserver.Options{Apps: []string{"acme/chat"}})
			cfg := srv.ClientConfig("alice", "phone")
			cfg.Org, cfg.Appkey = "acme", "chat"
			cfg.Token = srv.TokenFor("acme", "chat", "alice", time.Hour)
			c := testserver.Dial(t, cfg)
			other := testserver.Dial(t, srv.ClientConfig("bob", "phone")) // of the demo app

			changed := time.Now()
			if err := tt.change(srv.DataDir); err != nil {
				t.Fatal(err)
			}
			within := 5 * time.Second // the poll runs every 2 s
			if tt.admin {
				resp, err := daemon.Admin(t.Context(), srv.DataDir, daemon.AdminRequest{Op: "reload-apps"})
				if err != nil || resp.Ended != 1 {
					t.Fatalf("reload-apps: %+v, %v; want 1 session ended", resp, err)
				}
				within = time.Second
			}
			endedWith(t, c, qimpb.Code_UNAUTHENTICATED, within)
			t.Logf("session ended %v after the change", time.Since(changed).Round(time.Millisecond))
			if _, err := other.Send(t.Context(), client.Peer{User: "carol"}, client.Outgoing{Text: "still here"}); err != nil {
				t.Errorf("a session of another application: %v", err)
			}

			srv.Restart()
			cfg.Addr = srv.Addr
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			if c, err := client.Dial(ctx, cfg); !errors.Is(err, &client.Error{Code: qimpb.Code_UNAUTHENTICATED}) {
				if c != nil {
					c.Close()
				}
				t.Fatalf("dial with the old token after a restart: %v, want UNAUTHENTICATED", err)
			}
		})
	}
}

// TestTokenExpiry connects with a token that expires in about 2 s: the
// session used to go on sending after the expiry. It must end with
// TOKEN_EXPIRED; a client with a TokenFunc reconnects with a fresh token
// and goes on.
func TestTokenExpiry(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	cfg := srv.ClientConfig("alice", "phone")
	cfg.Token = srv.TokenFor(daemon.DemoOrg, daemon.DemoAppkey, "alice", 2*time.Second)
	c := testserver.Dial(t, cfg)

	refreshing := srv.ClientConfig("bob", "phone")
	refreshing.Token = srv.TokenFor(daemon.DemoOrg, daemon.DemoAppkey, "bob", 2*time.Second)
	refreshing.Reconnect = true
	var refreshed atomic.Int32
	refreshing.TokenFunc = func(context.Context) (string, error) {
		refreshed.Add(1)
		return srv.TokenFor(daemon.DemoOrg, daemon.DemoAppkey, "bob", time.Hour), nil
	}
	r := testserver.Dial(t, refreshing)

	endedWith(t, c, qimpb.Code_TOKEN_EXPIRED, 5*time.Second)
	exp, _ := auth.Expiry(cfg.Token)
	t.Logf("session ended %v after the token's expiry", time.Since(exp).Round(time.Millisecond))
	if _, err := c.Send(t.Context(), client.Peer{User: "bob"}, client.Outgoing{Text: "after expiry"}); err == nil {
		t.Error("a send after the token's expiry succeeded")
	}
	eventually(t, 5*time.Second, "bob's client did not reconnect with a fresh token", func() bool { return r.Reconnects() >= 1 })
	if _, err := r.Send(t.Context(), client.Peer{User: "alice"}, client.Outgoing{Text: "fresh token"}); err != nil {
		t.Errorf("send after refreshing the token: %v", err)
	}
	if n := refreshed.Load(); n != 1 {
		t.Errorf("TokenFunc called %d times, want 1", n)
	}
}

// TestEndSessions ends every session of one user through the admin socket
// (`qimd logout`): both of alice's devices end with UNAUTHENTICATED, bob's
// stays. There was no way to end a live session.
func TestEndSessions(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	phone := testserver.Dial(t, srv.ClientConfig("alice", "phone"))
	laptop := testserver.Dial(t, srv.ClientConfig("alice", "laptop"))
	bob := testserver.Dial(t, srv.ClientConfig("bob", "phone"))

	resp, err := daemon.Admin(t.Context(), srv.DataDir, daemon.AdminRequest{Op: "end-sessions", Org: daemon.DemoOrg, Appkey: daemon.DemoAppkey, User: "alice"})
	if err != nil || resp.Ended != 2 {
		t.Fatalf("end-sessions: %+v, %v; want 2 ended", resp, err)
	}
	for _, c := range []*client.Client{phone, laptop} {
		endedWith(t, c, qimpb.Code_UNAUTHENTICATED, 2*time.Second)
	}
	if _, err := bob.Send(t.Context(), client.Peer{User: "alice"}, client.Outgoing{Text: "still here"}); err != nil {
		t.Errorf("bob's session: %v", err)
	}
	if _, err := daemon.Admin(t.Context(), srv.DataDir, daemon.AdminRequest{Op: "nonsense"}); err == nil {
		t.Error("an unknown op succeeded")
	}
	if _, err := daemon.Admin(t.Context(), t.TempDir(), daemon.AdminRequest{Op: "reload-apps"}); !errors.Is(err, daemon.ErrNotRunning) {
		t.Errorf("admin request to a data directory without a server: %v, want ErrNotRunning", err)
	}
}

package daemon_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/qim-im/qim/auth"
	"github.com/qim-im/qim/certs"
	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/core"
	"github.com/qim-im/qim/daemon"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
	"github.com/qim-im/qim/store/pebblestore"
)

// countingRouter is a LocalRouter that counts the events it delivers.
type countingRouter struct {
	core.LocalRouter
	delivered atomic.Int64
}

func (r *countingRouter) Deliver(app string, users []string, ev core.Event) {
	r.delivered.Add(1)
	r.LocalRouter.Deliver(app, users, ev)
}

// startWithStore starts a daemon on st (and router, if not nil) in a new
// data directory, and returns it with the client configuration of user
// that reaches it; the daemon is closed when the test ends.
func startWithStore(t *testing.T, st store.Store, router core.Router) (*daemon.Daemon, func(user string) client.Config) {
	t.Helper()
	data := t.TempDir()
	d, err := daemon.Start(daemon.Config{Listen: "127.0.0.1:0", DataDir: data, Store: st, Router: router})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	tlsConf, err := certs.ClientTLS(filepath.Join(daemon.CertsDir(data), certs.CACertFile), false, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	secret, err := daemon.AppSecret(data, daemon.DemoOrg, daemon.DemoAppkey)
	if err != nil {
		t.Fatal(err)
	}
	return d, func(user string) client.Config {
		return client.Config{Addr: d.Addr().String(), TLSConfig: tlsConf, Org: daemon.DemoOrg, Appkey: daemon.DemoAppkey,
			User: user, Device: "d", Token: auth.Mint(secret, daemon.DemoOrg, daemon.DemoAppkey, user, time.Now().Add(time.Hour))}
	}
}

// memStore returns an in-memory Pebble store, closed when the test ends.
func memStore(t *testing.T) *pebblestore.Store {
	t.Helper()
	st, err := pebblestore.Open("db", pebblestore.Options{FS: vfs.NewMem(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestCallerStoreAndRouter starts a daemon on a store and a router the
// caller made: messages go through both, and the daemon leaves the store
// open when it closes (the caller owns it).
func TestCallerStoreAndRouter(t *testing.T) {
	st := memStore(t)
	var router countingRouter
	d, config := startWithStore(t, st, &router)
	alice, bob := testserver.Dial(t, config("alice")), testserver.Dial(t, config("bob"))
	if _, err := alice.Send(t.Context(), client.Peer{User: "bob"}, client.Outgoing{Text: "through the caller's store"}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-bob.Messages():
		if client.Text(m) != "through the caller's store" {
			t.Fatalf("bob got %v", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("bob got nothing")
	}
	if router.delivered.Load() == 0 {
		t.Error("the caller's router delivered nothing")
	}
	alice.Close()
	bob.Close()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	app := store.AppID(daemon.DemoOrg, daemon.DemoAppkey)
	if seq, err := st.LastSeq(t.Context(), app, store.DirectConv("alice", "bob")); err != nil || seq != 1 {
		t.Fatalf("the caller's store after the daemon closed: last seq %d, %v; want 1 and still open", seq, err)
	}
}

// epochless is a store that cannot give epochs.
type epochless struct{ store.Store }

func (epochless) NextEpoch(context.Context, string, string, string) (uint64, error) {
	return 0, errors.New("epochs unavailable")
}

// TestConnectRefusedWithoutEpoch checks that a CONNECT whose session
// cannot get the device's epoch from the store is refused with
// STORE_UNAVAILABLE, and opens no session.
func TestConnectRefusedWithoutEpoch(t *testing.T) {
	d, config := startWithStore(t, epochless{memStore(t)}, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, config("alice"))
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != qimpb.Code_STORE_UNAVAILABLE {
		if c != nil {
			c.Close()
		}
		t.Fatalf("dial: %v, want STORE_UNAVAILABLE", err)
	}
	if n := d.Devices().Opened(); n != 0 {
		t.Fatalf("%d sessions opened", n)
	}
}

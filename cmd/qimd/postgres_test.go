package main

import (
	"context"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/qim-im/qim/certs"
	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/daemon"
	"github.com/qim-im/qim/internal/pgtest"
	"github.com/qim-im/qim/internal/testserver"
)

// TestServePostgres runs `qimd serve --store postgres://...`: alice writes
// to bob while he is offline and into a group, the server stops, a new one
// starts on another data directory with a copy of the first one's
// certificates and secrets (as a second node would) and the same database,
// and bob's device gets everything, in order, from it.
func TestServePostgres(t *testing.T) {
	dbURL := pgtest.Database(t)
	data := t.TempDir()
	addr, stop := serveQimd(t, "--data", data, "--store", dbURL)
	tok := func(data, user string) string {
		var out strings.Builder
		if err := run(t.Context(), []string{"qimd", "token", "--data", data, "--user", user}, &out, io.Discard); err != nil {
			t.Fatalf("qimd token: %v", err)
		}
		return strings.TrimSpace(out.String())
	}
	dial := func(data, addr, user, device string) *client.Client {
		t.Helper()
		tlsConf, err := certs.ClientTLS(filepath.Join(daemon.CertsDir(data), certs.CACertFile), false, "localhost")
		if err != nil {
			t.Fatal(err)
		}
		return testserver.Dial(t, client.Config{Addr: addr, TLSConfig: tlsConf, Org: daemon.DemoOrg, Appkey: daemon.DemoAppkey,
			User: user, Token: tok(data, user), Device: device})
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	alice := dial(data, addr, "alice", "phone")
	g, err := alice.CreateGroup(ctx, "friends")
	if err != nil {
		t.Fatal(err)
	}
	bob := dial(data, addr, "bob", "phone")
	if _, err := bob.JoinGroup(ctx, g.GetId()); err != nil {
		t.Fatal(err)
	}
	bob.Close()
	var want []string
	for i, to := range []client.Peer{client.ToUser("bob"), client.ToGroup(g.GetId()), client.ToUser("bob")} {
		text := "message " + string(rune('1'+i))
		if _, err := alice.Send(ctx, to, client.Outgoing{Text: text}); err != nil {
			t.Fatalf("send %s: %v", text, err)
		}
		want = append(want, text)
	}
	alice.Close()
	if err := stop(); err != nil {
		t.Fatalf("qimd serve: %v", err)
	}

	// A second node: its own data directory, the first one's certificates
	// and application secrets, the same database.
	data2 := t.TempDir()
	if err := daemon.CopyShared(data, data2); err != nil {
		t.Fatal(err)
	}
	addr2, stop2 := serveQimd(t, "--data", data2, "--store", dbURL)
	defer stop2()
	bob = dial(data2, addr2, "bob", "phone")
	// Conversations are pushed independently; each keeps its order.
	var direct, group []string
	timeout := time.After(20 * time.Second)
	for len(direct)+len(group) < len(want) {
		select {
		case m := <-bob.Messages():
			if m.GetToGroup() != "" {
				group = append(group, client.Text(m))
			} else {
				direct = append(direct, client.Text(m))
			}
		case <-timeout:
			t.Fatalf("bob got %q and %q, want %q", direct, group, want)
		}
	}
	if !slices.Equal(direct, []string{want[0], want[2]}) || !slices.Equal(group, []string{want[1]}) {
		t.Errorf("bob got 1:1 %q and group %q, want 1:1 %q and group %q", direct, group, []string{want[0], want[2]}, want[1:2])
	}
}

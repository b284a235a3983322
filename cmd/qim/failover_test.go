package main

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/pgtest"
	"github.com/qim-im/qim/internal/testserver"
)

// qimOn runs the command line as user with --server servers (a
// comma-separated list) against the nodes of cl, and returns its output.
func qimOn(ctx context.Context, cl *testserver.Cluster, servers, user string, args ...string) result {
	var stdout, stderr testserver.Buffer
	n := cl.Nodes[0]
	full := append([]string{"qim", "--server", servers, "--ca", n.CAFile, "--user", user, "--token", n.Token(user)}, args...)
	err := run(ctx, full, strings.NewReader(""), &stdout, &stderr)
	return result{stdout.String(), stderr.String(), err}
}

// TestServerList runs the commands with --server naming both nodes of a
// cluster. listen fails over when its node shuts down, says so on stderr,
// and prints every message once; a one-shot send whose first node is gone
// goes to the second.
func TestServerList(t *testing.T) {
	cl := testserver.StartCluster(t, 2, testserver.Options{Postgres: pgtest.Database(t)})
	n1, n2 := cl.Nodes[0], cl.Nodes[1]
	both := n1.Addr + ", " + n2.Addr
	ctx, cancel := context.WithTimeout(t.Context(), 2*waitTime)
	defer cancel()

	if r := qimOn(ctx, cl, both, "alice", "send", "--to", "bob", "m1"); r.err != nil || r.stdout == "" {
		t.Fatalf("send: %+v", r)
	}

	// bob listens through node 1. (run is never called concurrently: alice
	// sends with the library meanwhile.)
	listened := make(chan result, 1)
	go func() { listened <- qimOn(ctx, cl, both, "bob", "listen", "--count", "4") }()
	eventually(t, "bob's listen to connect to node 1", func() bool { return n1.Connects() == 2 }) // after alice's send
	aliceCfg := cl.ClientConfig("alice", "laptop")
	aliceCfg.Addr, aliceCfg.Addrs = n2.Addr, nil
	alice := testserver.Dial(t, aliceCfg)
	sendLib(t, alice, "m2")

	n1.Shutdown()
	for _, text := range []string{"m3", "m4"} {
		sendLib(t, alice, text)
	}
	var r result
	select {
	case r = <-listened:
	case <-ctx.Done():
		t.Fatal("listen did not end")
	}
	if r.err != nil {
		t.Fatalf("listen: %v (stderr %q)", r.err, r.stderr)
	}
	want := ""
	for i := 1; i <= 4; i++ {
		want += fmt.Sprintf("[@alice] alice: m%d (#%d)\n", i, i)
	}
	if r.stdout != want {
		t.Fatalf("listen printed %q, want %q", r.stdout, want)
	}
	if line := "qim: failed over from " + n1.Addr + " to " + n2.Addr + "\n"; r.stderr != line {
		t.Fatalf("listen wrote %q to stderr, want %q", r.stderr, line)
	}

	// Node 1 is gone: send tries it (until the QUIC handshake times out),
	// then node 2. bob's listening device resumes where it was, on node 2.
	if r := qimOn(ctx, cl, both, "alice", "send", "--to", "bob", "m5"); r.err != nil || !regexp.MustCompile(`^id=\d+ seq=5\n$`).MatchString(r.stdout) {
		t.Fatalf("send with the first node gone: %+v", r)
	}
	if r := qimOn(ctx, cl, n2.Addr+","+n1.Addr, "bob", "listen", "--count", "1"); r.err != nil || r.stdout != "[@alice] alice: m5 (#5)\n" {
		t.Fatalf("listen again: %+v", r)
	}

	if r := qimOn(ctx, cl, n1.Addr+",", "alice", "send", "--to", "bob", "x"); r.err == nil || !strings.HasPrefix(errorLine(r.err), "qim: --server") {
		t.Fatalf("send with an empty node in --server: %+v", r)
	}
	if r := qimOn(ctx, cl, both, "alice", "bench", "connect"); r.err == nil || !strings.Contains(r.err.Error(), "give one node") {
		t.Fatalf("bench with two nodes: %+v", r)
	}
}

// sendLib sends text from c to bob with the client library.
func sendLib(t *testing.T, c *client.Client, text string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTime)
	defer cancel()
	if _, err := c.Send(ctx, client.ToUser("bob"), client.Outgoing{Text: text}); err != nil {
		t.Fatalf("send %q: %v", text, err)
	}
}

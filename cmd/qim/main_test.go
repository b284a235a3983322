package main

import (
	"context"
	"encoding/json"
	"github.com/qim-im/qim/internal/pgtest"
	"io"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/testserver"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitTime = 15 * time.Second

// qim runs the command line as user against srv, with stdin, and returns
// its output.
type result struct {
	stdout, stderr string
	err            error
}

func qimIn(t *testing.T, srv *testserver.Server, user string, stdin io.Reader, args ...string) result {
	t.Helper()
	var stdout, stderr testserver.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), waitTime)
	defer cancel()
	full := append([]string{"qim", "--server", srv.Addr, "--ca", srv.CAFile,
		"--user", user, "--token", srv.Token(user)}, args...)
	err := run(ctx, full, stdin, &stdout, &stderr)
	return result{stdout.String(), stderr.String(), err}
}

func qim(t *testing.T, srv *testserver.Server, user string, args ...string) result {
	t.Helper()
	return qimIn(t, srv, user, strings.NewReader(""), args...)
}

// ok runs a command that must succeed and returns its stdout.
func ok(t *testing.T, srv *testserver.Server, user string, args ...string) string {
	t.Helper()
	r := qim(t, srv, user, args...)
	if r.err != nil {
		t.Fatalf("qim %s: %v (stderr %q)", strings.Join(args, " "), r.err, r.stderr)
	}
	return r.stdout
}

func TestSendThenListen(t *testing.T) { testSendThenListen(t, testserver.Options{}) }

func testSendThenListen(t *testing.T, opts testserver.Options) {
	srv := testserver.Start(t, opts)
	out := ok(t, srv, "alice", "send", "--to", "bob", "hello", "world")
	if !regexp.MustCompile(`^id=\d+ seq=1\n$`).MatchString(out) {
		t.Fatalf("send printed %q", out)
	}
	var ack struct {
		ID        uint64 `json:"id,string"`
		Seq       uint64 `json:"seq"`
		Timestamp int64  `json:"timestamp"`
		Duplicate bool   `json:"duplicate"`
	}
	out = ok(t, srv, "alice", "send", "--to", "bob", "--id", "m-2", "--json", "second")
	if err := json.Unmarshal([]byte(out), &ack); err != nil || ack.Seq != 2 || ack.Duplicate || ack.ID == 0 || ack.Timestamp == 0 {
		t.Fatalf("send --json printed %q (%v)", out, err)
	}
	out = ok(t, srv, "alice", "send", "--to", "bob", "--id", "m-2", "second")
	if want := regexp.MustCompile(`^id=\d+ seq=2 duplicate\n$`); !want.MatchString(out) {
		t.Fatalf("retried send printed %q", out)
	}
	ok(t, srv, "alice", "send", "--to", "bob", "--image", "https://example.com/a.png")

	out = ok(t, srv, "bob", "listen", "--count", "2", "--json", "--timeout", "10s")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("listen --count 2 printed %q", out)
	}
	for i, want := range []string{"hello world", "second"} {
		var m map[string]any
		if err := json.Unmarshal([]byte(lines[i]), &m); err != nil {
			t.Fatal(err)
		}
		for k, v := range map[string]any{"seq": float64(i + 1), "conv": "@alice", "from": "alice",
			"to_user": "bob", "to_group": "", "type": "TXT", "text": want, "url": ""} {
			if m[k] != v {
				t.Errorf("line %d: %s = %v, want %v (%s)", i, k, m[k], v, lines[i])
			}
		}
		for _, k := range []string{"id", "from_device", "timestamp", "client_msg_id"} {
			if _, ok := m[k]; !ok {
				t.Errorf("line %d has no %q: %s", i, k, lines[i])
			}
		}
	}
	// listen acknowledged only what it printed: the image comes next.
	out = ok(t, srv, "bob", "listen", "--count", "1", "--timeout", "10s")
	if out != "[@alice] alice: https://example.com/a.png (#3)\n" {
		t.Fatalf("listen printed %q", out)
	}
}

// TestPostgres runs the README walkthrough's commands against a server
// whose store is PostgreSQL (qimd serve --store postgres://...): the same
// commands, the same output.
func TestPostgres(t *testing.T) {
	for name, test := range map[string]func(*testing.T, testserver.Options){
		"SendThenListen":   testSendThenListen,
		"GroupCommands":    testGroupCommands,
		"ContactsCommands": testContactsCommands,
	} {
		t.Run(name, func(t *testing.T) { test(t, testserver.Options{Postgres: pgtest.Database(t)}) })
	}
}

func TestFlagsAfterArguments(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	out := ok(t, srv, "alice", "send", "--to", "carol", "warm", "--json")
	if !strings.HasPrefix(out, `{"id":`) {
		t.Fatalf("send TEXT --json printed %q", out)
	}
	ok(t, srv, "alice", "send", "--to", "carol", "--", "-5", "--degrees")
	out = ok(t, srv, "carol", "listen", "--count", "2", "--timeout", "10s")
	if out != "[@alice] alice: warm (#1)\n[@alice] alice: -5 --degrees (#2)\n" {
		t.Fatalf("listen printed %q", out)
	}
	if r := qim(t, srv, "alice", "send", "--to", "carol", "hi", "--bogus"); r.err == nil {
		t.Fatal("unknown flag after TEXT accepted")
	}
}

func TestListenTimeout(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	if r := qim(t, srv, "bob", "listen", "--timeout", "200ms"); r.err != nil || r.stdout != "" {
		t.Fatalf("listen --timeout without --count: %+v", r)
	}
	r := qim(t, srv, "bob", "listen", "--count", "1", "--timeout", "200ms")
	if r.err == nil || !strings.Contains(r.err.Error(), "timed out") {
		t.Fatalf("listen --count 1 --timeout: %+v", r)
	}
}

func TestOneShotDoesNotReplaceListener(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	// bob listens on device "cli", as qim listen does. (urfave/cli mutates
	// its global help flag in every run, so run is never called
	// concurrently in these tests.)
	listener := dialLib(t, srv, "bob", "cli")
	ok(t, srv, "bob", "contacts", "add", "alice")
	ok(t, srv, "bob", "send", "--to", "carol", "hi carol")
	ok(t, srv, "alice", "send", "--to", "bob", "ping")
	// The listener is bob's other device: it gets bob's own send too.
	for _, want := range []string{"hi carol", "ping"} {
		select {
		case m, ok := <-listener.Messages():
			if !ok {
				t.Fatalf("listener ended: %v", listener.Err())
			}
			if client.Text(m) != want {
				t.Fatalf("listener got %v, want %q", m, want)
			}
		case <-time.After(waitTime):
			t.Fatalf("listener did not get %q", want)
		}
	}
}

// dialLib connects user's device with the client library.
func dialLib(t *testing.T, srv *testserver.Server, user, device string) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTime)
	defer cancel()
	c, err := client.Dial(ctx, client.Config{Addr: srv.Addr, TLSConfig: srv.ClientTLS(),
		Org: "demo", Appkey: "demo", User: user, Token: srv.Token(user), Device: device})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestGroupCommands(t *testing.T) { testGroupCommands(t, testserver.Options{}) }

func testGroupCommands(t *testing.T, opts testserver.Options) {
	srv := testserver.Start(t, opts)
	out := ok(t, srv, "alice", "group", "create", "book", "club")
	id := strings.TrimSuffix(out, "\n")
	if id == "" || strings.ContainsAny(id, " \t\n") {
		t.Fatalf("group create printed %q, want the id alone", out)
	}
	ok(t, srv, "alice", "group", "invite", id, "bob")
	ok(t, srv, "carol", "group", "join", id)
	if out := ok(t, srv, "alice", "group", "members", id); out != "alice\nbob\ncarol\n" {
		t.Fatalf("members printed %q", out)
	}
	if out := ok(t, srv, "alice", "group", "members", "--json", id); out != `["alice","bob","carol"]`+"\n" {
		t.Fatalf("members --json printed %q", out)
	}
	if out := ok(t, srv, "bob", "group", "list"); out != id+"\tbook club\talice\n" {
		t.Fatalf("list printed %q", out)
	}
	var groups []map[string]any
	if err := json.Unmarshal([]byte(ok(t, srv, "bob", "group", "list", "--json")), &groups); err != nil ||
		len(groups) != 1 || groups[0]["id"] != id || groups[0]["name"] != "book club" || groups[0]["owner"] != "alice" {
		t.Fatalf("list --json: %v %v", groups, err)
	}
	for i := range 3 {
		ok(t, srv, "bob", "send", "--group", id, "msg", string(rune('a'+i)))
	}
	if out := ok(t, srv, "carol", "group", "history", id, "--limit", "2"); out !=
		"[#"+id+"] bob: msg b (#2)\n[#"+id+"] bob: msg c (#3)\n" {
		t.Fatalf("history printed %q", out)
	}
	if out := ok(t, srv, "carol", "group", "history", "--before", "2", "--json", id); !strings.Contains(out, `"seq":1,`) ||
		strings.Count(out, "\n") != 1 {
		t.Fatalf("history --before 2 --json printed %q", out)
	}

	r := qim(t, srv, "bob", "group", "kick", id, "carol")
	if r.err == nil || !strings.HasPrefix(errorLine(r.err), "qim: FORBIDDEN") {
		t.Fatalf("kick by a member: %+v", r)
	}
	ok(t, srv, "alice", "group", "kick", id, "carol")
	ok(t, srv, "bob", "group", "leave", id)
	if out := ok(t, srv, "alice", "group", "members", id); out != "alice\n" {
		t.Fatalf("members printed %q", out)
	}
	if out := ok(t, srv, "bob", "group", "list", "--json"); out != "[]\n" {
		t.Fatalf("list --json printed %q", out)
	}
}

func TestContactsCommands(t *testing.T) { testContactsCommands(t, testserver.Options{}) }

func testContactsCommands(t *testing.T, opts testserver.Options) {
	srv := testserver.Start(t, opts)
	ok(t, srv, "alice", "contacts", "add", "carol")
	ok(t, srv, "alice", "contacts", "add", "bob")
	// Neither added alice to their contacts: their presence is hidden.
	if out := ok(t, srv, "alice", "contacts", "list"); out != "bob    (hidden)\ncarol  (hidden)\n" {
		t.Fatalf("list printed %q", out)
	}
	ok(t, srv, "alice", "contacts", "remove", "bob")
	if out := ok(t, srv, "alice", "contacts", "list", "--json"); out != `[{"user":"carol","state":"hidden","last_seen":0,"since":0}]`+"\n" {
		t.Fatalf("list --json printed %q", out)
	}
	if out := ok(t, srv, "bob", "contacts", "list", "--json"); out != "[]\n" {
		t.Fatalf("empty list --json printed %q", out)
	}
}

func TestChat(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	ok(t, srv, "bob", "send", "--to", "alice", "are you there?")

	stdinR, stdinW := io.Pipe()
	var stdout, stderr testserver.Buffer
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(t.Context(), waitTime)
		defer cancel()
		done <- run(ctx, []string{"qim", "--server", srv.Addr, "--ca", srv.CAFile, "--user", "alice",
			"--token", srv.Token("alice"), "chat", "--to", "bob"}, stdinR, &stdout, &stderr)
	}()
	eventually(t, "the backlog to be printed", func() bool {
		return stdout.String() == "[@bob] bob: are you there? (#1)\n"
	})
	io.WriteString(stdinW, "yes\n\n   \nI am\n")
	bob := dialLib(t, srv, "bob", "phone")
	for got := ""; got != "I am"; {
		select {
		case m := <-bob.Messages():
			got = client.Text(m)
		case <-time.After(waitTime):
			t.Fatal("alice's lines did not reach bob")
		}
	}
	if _, err := bob.Send(t.Context(), client.ToUser("alice"), client.Outgoing{Text: "good"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "bob's answer to be printed", func() bool { return strings.Contains(stdout.String(), "good (#4)") })
	io.WriteString(stdinW, "/quit\nnot sent\n")
	stdinW.Close()
	if err := <-done; err != nil {
		t.Fatalf("chat: %v (stderr %q)", err, stderr.String())
	}
	if stderr.String() != "" {
		t.Fatalf("chat wrote to stderr: %q", stderr.String())
	}
	// bob's listening device is new to the server: it gets the conversation
	// from the start, his own first message included.
	out := ok(t, srv, "bob", "listen", "--count", "3", "--timeout", "10s")
	if out != "[@alice] bob: are you there? (#1)\n[@alice] alice: yes (#2)\n[@alice] alice: I am (#3)\n" {
		t.Fatalf("bob got %q", out)
	}

	// Refused sends are reported and the chat goes on; end of input ends it.
	var errs testserver.Buffer
	err := run(t.Context(), []string{"qim", "--server", srv.Addr, "--ca", srv.CAFile, "--user", "alice",
		"--token", srv.Token("alice"), "chat", "--group", "nope"}, strings.NewReader("one\ntwo\n"), io.Discard, &errs)
	if err != nil || strings.Count(errs.String(), "NOT_FOUND") != 2 {
		t.Fatalf("chat to a missing group: %v, stderr %q", err, errs.String())
	}
}

func TestErrors(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	base := []string{"qim", "--server", srv.Addr, "--ca", srv.CAFile}
	for _, tt := range []struct {
		name string
		args []string
		want string // prefix of the line main prints
	}{
		{"bad token", []string{"--user", "alice", "--token", "v1.1.x", "contacts", "list"}, "qim: UNAUTHENTICATED"},
		{"no user", []string{"--token", "x", "contacts", "list"}, "qim: --user"},
		{"no token", []string{"--user", "alice", "contacts", "list"}, "qim: --token"},
		{"no recipient", []string{"--user", "alice", "--token", srv.Token("alice"), "send", "hi"}, "qim: give exactly one"},
		{"no text", []string{"--user", "alice", "--token", srv.Token("alice"), "send", "--to", "bob"}, "qim: send: nothing to send"},
		{"missing argument", []string{"--user", "alice", "--token", srv.Token("alice"), "group", "invite", "g1"}, "qim: usage: qim group invite GID USER"},
		{"invalid argument", []string{"--user", "alice", "--token", srv.Token("alice"), "send", "--to", "bob", "--image", "ftp://x"}, "qim: INVALID_ARGUMENT"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr testserver.Buffer
			err := run(t.Context(), append(append([]string{}, base...), tt.args...), strings.NewReader(""), &stdout, &stderr)
			if err == nil {
				t.Fatalf("succeeded: %q", stdout.String())
			}
			if line := errorLine(err); !strings.HasPrefix(line, tt.want) || strings.Contains(line, "\n") {
				t.Fatalf("error line %q, want prefix %q", line, tt.want)
			}
		})
	}
}

func TestInsecureWarns(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	var stdout, stderr testserver.Buffer
	err := run(t.Context(), []string{"qim", "--server", srv.Addr, "--ca", "/nonexistent", "--insecure",
		"--user", "alice", "--token", srv.Token("alice"), "contacts", "list"}, strings.NewReader(""), &stdout, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr.String(), "warning") || !strings.Contains(stderr.String(), "--insecure") {
		t.Fatalf("stderr %q has no warning", stderr.String())
	}
}

func TestEnvVars(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	t.Setenv("QIM_SERVER", srv.Addr)
	t.Setenv("QIM_CA", srv.CAFile)
	t.Setenv("QIM_USER", "alice")
	t.Setenv("QIM_TOKEN", srv.Token("alice"))
	var stdout testserver.Buffer
	if err := run(t.Context(), []string{"qim", "group", "create", "env"}, strings.NewReader(""), &stdout, io.Discard); err != nil {
		t.Fatal(err)
	}
	if stdout.String() == "" {
		t.Fatal("no group id printed")
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTime)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCloseOnSignal sends each close signal to the test process while
// qim listen or qim chat runs under main's signal context, and checks that
// the command ends cleanly (closing its session) instead of the process
// dying, or going on.
func TestCloseOnSignal(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	for _, tt := range []struct {
		name string
		sig  syscall.Signal
		args []string
	}{
		{"listen SIGHUP", syscall.SIGHUP, []string{"listen"}},
		{"chat SIGHUP", syscall.SIGHUP, []string{"chat", "--to", "bob"}},
		{"listen SIGTERM", syscall.SIGTERM, []string{"listen"}},
		{"chat SIGINT", syscall.SIGINT, []string{"chat", "--to", "bob"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// The command prints bob's message once it is connected.
			user := strings.ReplaceAll(tt.name, " ", "-")
			ok(t, srv, "bob", "send", "--to", user, "hello")
			stdinR, stdinW := io.Pipe()
			defer stdinW.Close()
			ctx, stop := signal.NotifyContext(t.Context(), closeSignals()...)
			defer stop()
			var stdout testserver.Buffer
			done := make(chan error, 1)
			go func() {
				done <- run(ctx, append([]string{"qim", "--server", srv.Addr, "--ca", srv.CAFile, "--user", user,
					"--token", srv.Token(user)}, tt.args...), stdinR, &stdout, io.Discard)
			}()
			eventually(t, "bob's message to be printed", func() bool { return strings.Contains(stdout.String(), "hello") })
			if err := syscall.Kill(os.Getpid(), tt.sig); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("%s after %v: %v", tt.args[0], tt.sig, err)
				}
			case <-time.After(waitTime):
				t.Fatalf("%s still running %v after %v", tt.args[0], waitTime, tt.sig)
			}
		})
	}
}

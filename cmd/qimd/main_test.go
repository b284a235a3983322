package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"go.uber.org/goleak"

	"github.com/qim-im/qim/auth"
	"github.com/qim-im/qim/certs"
	"github.com/qim-im/qim/daemon"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) { qimdBin.Remove() }))
}

// TestServeMetrics starts `qimd serve --metrics 127.0.0.1:0`, reads the
// endpoint's address from what it prints, scrapes it, and stops the server.
func TestServeMetrics(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr testserver.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"qimd", "serve", "--listen", "127.0.0.1:0", "--data", t.TempDir(), "--metrics", "127.0.0.1:0", "--log-level", "warn"}, io.Discard, &stderr)
	}()

	printed := regexp.MustCompile(`qimd: metrics on (http://\S+/metrics),`)
	var url string
	for deadline := time.Now().Add(20 * time.Second); url == ""; time.Sleep(10 * time.Millisecond) {
		select {
		case err := <-done:
			t.Fatalf("qimd serve ended: %v\n%s", err, stderr.String())
		default:
		}
		if m := printed.FindStringSubmatch(stderr.String()); m != nil {
			url = m[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("qimd printed no metrics address:\n%s", stderr.String())
		}
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "qim_sessions 0") {
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, body)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("qimd serve: %v", err)
	}
}

// TestFirstCommandCreatesDemoApp runs each command that reads or adds
// applications first on a new data directory, and checks that the
// README's `qimd token --user alice` works afterwards.
func TestFirstCommandCreatesDemoApp(t *testing.T) {
	for _, tt := range []struct {
		name  string
		first []string
	}{
		{"token", []string{"token", "--user", "bob"}},
		{"app create", []string{"app", "create", "--org", "acme", "--appkey", "chat"}},
		{"app create demo", []string{"app", "create", "--org", "demo", "--appkey", "demo"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			data := t.TempDir()
			args := append([]string{"qimd"}, tt.first...)
			if err := run(t.Context(), append(args, "--data", data), io.Discard, io.Discard); err != nil {
				t.Fatalf("qimd %s: %v", strings.Join(tt.first, " "), err)
			}
			var out strings.Builder
			if err := run(t.Context(), []string{"qimd", "token", "--data", data, "--user", "alice"}, &out, io.Discard); err != nil {
				t.Fatalf("qimd token after qimd %s: %v", strings.Join(tt.first, " "), err)
			}
			secret, err := daemon.AppSecret(data, daemon.DemoOrg, daemon.DemoAppkey)
			if err != nil {
				t.Fatal(err)
			}
			if err := auth.Verify(secret, daemon.DemoOrg, daemon.DemoAppkey, "alice", strings.TrimSpace(out.String()), time.Now()); err != nil {
				t.Fatalf("token %q: %v", out.String(), err)
			}
		})
	}
}

// TestServeAuthTimeoutFlag starts `qimd serve --auth-timeout 300ms` and
// checks that a connection that sends nothing is closed with AUTH_TIMEOUT
// in about that time.
func TestServeAuthTimeoutFlag(t *testing.T) {
	ctx := context.Background()
	data := t.TempDir()
	addr, stop := serveQimd(t, "--data", data, "--auth-timeout", "300ms", "--auth-backoff-max", "-1s")
	tlsConf, err := certs.ClientTLS(filepath.Join(daemon.CertsDir(data), certs.CACertFile), false, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	defer dcancel()
	start := time.Now()
	qc, err := quic.DialAddr(dctx, addr, tlsConf, &quic.Config{MaxIdleTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer qc.CloseWithError(0, "")
	select {
	case <-qc.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("connection not closed within 5 s")
	}
	var ae *quic.ApplicationError
	if err := context.Cause(qc.Context()); !errors.As(err, &ae) || qimpb.Code(ae.ErrorCode) != qimpb.Code_AUTH_TIMEOUT {
		t.Fatalf("closed with %v, want AUTH_TIMEOUT", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("closed after %v, want about 300ms", took)
	}
	if err := stop(); err != nil {
		t.Fatalf("qimd serve: %v", err)
	}
}

// TestServeHTTPFlag starts `qimd serve` with the HTTP API (the default),
// which it announces and serves over TCP on its port, and with
// --http=false, which leaves the TCP port alone.
func TestServeHTTPFlag(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		http bool
	}{
		{"default", nil, true},
		{"--http=false", []string{"--http=false"}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			data := t.TempDir()
			addr, stderr, stop := serveQimdLog(t, append([]string{"--data", data}, tt.args...)...)
			announced := strings.Contains(stderr.String(), "qimd: HTTP API on https://"+addr+"/")
			if announced != tt.http {
				t.Fatalf("HTTP API announced: %v, want %v:\n%s", announced, tt.http, stderr.String())
			}
			if tt.http {
				resp, err := httpsClient(t, data).Get("https://" + addr + "/v1/health")
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("GET /v1/health: %s", resp.Status)
				}
			} else {
				ln, err := net.Listen("tcp", addr)
				if err != nil {
					t.Fatalf("the TCP port is taken with --http=false: %v", err)
				}
				ln.Close()
			}
			if err := stop(); err != nil {
				t.Fatalf("qimd serve: %v", err)
			}
		})
	}
}

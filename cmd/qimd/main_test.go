package main

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/qim-im/qim/internal/testserver"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) { removeQimdBuild() }))
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

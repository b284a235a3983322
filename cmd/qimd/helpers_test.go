package main

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/qim-im/qim/certs"
	"github.com/qim-im/qim/daemon"
	"github.com/qim-im/qim/internal/testserver"
)

// serveQimd runs `qimd serve` with args in this process, waits until it
// prints its address, and returns it with a func that stops the server and
// returns what serve returned.
func serveQimd(t *testing.T, args ...string) (addr string, stop func() error) {
	t.Helper()
	addr, _, stop = serveQimdLog(t, args...)
	return addr, stop
}

// serveQimdLog is serveQimd that also returns what the server writes to
// standard error.
func serveQimdLog(t *testing.T, args ...string) (addr string, stderr *testserver.Buffer, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stderr = new(testserver.Buffer)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"qimd", "serve", "--listen", "127.0.0.1:0", "--log-level", "warn"}, args...), io.Discard, stderr)
	}()
	var once bool
	var result error
	stop = func() error {
		if !once {
			once = true
			cancel()
			result = <-done
		}
		return result
	}
	t.Cleanup(func() { stop() })
	printed := regexp.MustCompile(`qimd: serving on (\S+);`)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		select {
		case err := <-done:
			once, result = true, err
			t.Fatalf("qimd serve ended: %v\n%s", err, stderr.String())
		default:
		}
		if m := printed.FindStringSubmatch(stderr.String()); m != nil {
			return m[1], stderr, stop
		}
		if time.Now().After(deadline) {
			t.Fatalf("qimd printed no address:\n%s", stderr.String())
		}
	}
}

// httpsClient returns an HTTPS client that trusts the CA of the data
// directory data, closed when the test ends.
func httpsClient(t *testing.T, data string) *http.Client {
	t.Helper()
	tlsConf, err := certs.ClientTLS(filepath.Join(daemon.CertsDir(data), certs.CACertFile), false, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	tlsConf.NextProtos = nil
	tr := &http.Transport{TLSClientConfig: tlsConf}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

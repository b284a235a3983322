package main

import (
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/qim-im/qim/daemon"
	"github.com/qim-im/qim/internal/testserver"
)

// TestBench runs the bench scenarios from the command line against a real
// server, with its metrics, briefly, and checks the summaries they print.
func TestBench(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{SendRate: -1, HandshakeRate: 1e6, Metrics: "127.0.0.1:0"})
	secret := filepath.Join(daemon.AppsDir(srv.DataDir), daemon.DemoOrg, daemon.DemoAppkey+".secret")
	common := []string{"--secret", secret, "--metrics", srv.MetricsURL}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"pair", "--pairs", "2", "--window", "2", "--warmup", "100ms", "--duration", "300ms"},
			`(?s)pair: 2 pairs x 2 in flight, offline=false.*delivered +\d+ msgs/s.*latency +p50 .*server CPU +[\d.]+ µs/msg`},
		{[]string{"pair", "--pairs", "2", "--offline", "--rate", "100", "--warmup", "100ms", "--duration", "300ms"},
			`(?s)offline=true.*delivered +\d+ msgs/s`},
		{[]string{"fanout", "--members", "3,5", "--messages", "10"},
			`(?s)fanout-3: 10 messages, 20 deliveries in .*fanout-5: 10 messages, 40 deliveries in `},
		{[]string{"connect", "--concurrency", "2", "--duration", "300ms"},
			`connect: \d+ connects/s \(\d+ in [\d.]+m?s, 0 failed\)`},
		{[]string{"idle", "--devices", "20", "--window", "200ms"},
			`idle: 20 devices: -?[\d.]+ KiB heap and -?[\d.]+ KiB RSS per device`},
	} {
		r := qim(t, srv, "nobody", append(append([]string{"bench"}, tt.args...), common...)...)
		name := strings.Join(tt.args[:1], " ")
		// 20 idle devices are within the server heap's noise: idle may
		// report that the heap did not grow; its figures are checked at
		// scale by make bench, here only its wiring.
		if r.err != nil && !(tt.args[0] == "idle" && strings.Contains(r.err.Error(), "did not grow")) {
			t.Errorf("bench %s: %v\nstderr: %s", name, r.err, r.stderr)
			continue
		}
		if r.err == nil && !regexp.MustCompile(tt.want).MatchString(r.stdout) {
			t.Errorf("bench %s printed:\n%s\nwant it to match %s", name, r.stdout, tt.want)
		}
	}
	if r := qim(t, srv, "nobody", "bench", "pair", "--secret", filepath.Join(t.TempDir(), "none")); r.err == nil || !strings.Contains(r.err.Error(), "secret") {
		t.Errorf("bench without a secret file: %v", r.err)
	}
}

// TestBenchGC checks that the load generator raises its own GOGC and the
// baseline server, a server, does not.
func TestBenchGC(t *testing.T) {
	if os.Getenv("GOGC") != "" {
		t.Skip("GOGC is set")
	}
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	missing := filepath.Join(t.TempDir(), "missing")
	for _, tt := range []struct {
		args []string
		want int
	}{
		{[]string{"qim", "bench", "quic-server", "--cert", missing, "--key", missing}, 100},
		{[]string{"qim", "bench", "pair", "--secret", missing}, 400},
	} {
		debug.SetGCPercent(100)
		if err := run(t.Context(), tt.args, strings.NewReader(""), io.Discard, io.Discard); err == nil {
			t.Fatalf("%v succeeded without its files", tt.args)
		}
		if got := debug.SetGCPercent(100); got != tt.want {
			t.Errorf("%v: GOGC %d, want %d", tt.args[1:3], got, tt.want)
		}
	}
}

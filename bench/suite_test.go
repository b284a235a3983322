package bench_test

import (
	"context"
	"github.com/qim-im/qim/internal/pgtest"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qim-im/qim/bench"
)

// TestSuiteQuick runs `qim bench suite --quick` end to end, with real
// binaries: qimd and the baseline server as processes, every scenario and
// its baseline. The figures of so short a run mean little; what is checked
// is that every scenario measured something against a baseline.
func TestSuiteQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries and starts servers")
	}
	dir := t.TempDir()
	for _, cmd := range []string{"qimd", "qim"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, cmd), "github.com/qim-im/qim/cmd/"+cmd).CombinedOutput()
		if err != nil {
			t.Fatalf("build %s: %v\n%s", cmd, err, out)
		}
	}
	var out, progress strings.Builder
	o := bench.SuiteOptions{Qimd: filepath.Join(dir, "qimd"), Qim: filepath.Join(dir, "qim"), Out: &out, Progress: &progress}
	o.Quick()
	// pair-durable-pg and the cluster scenarios run where PostgreSQL does
	// (and must, in CI).
	withPG := pgtest.Required() || pgtest.Check(t.Context()) == nil
	if withPG {
		o.Postgres = pgtest.Database(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	lines, err := bench.RunSuite(ctx, o)
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatalf("%v\nprogress:\n%s", err, progress.String())
	}
	got := make(map[string]bench.Line)
	for _, l := range lines {
		got[l.Scenario] = l
	}
	for _, name := range []string{
		"idle", "pair-ephemeral", "pair-ephemeral-p99", "pair-durable", "connect",
		"migrate", "migrate-prepared", "migrate-reconnect", "fanout-10", "fanout-50",
		"pair-durable-pg", "cluster-pair-durable", "cluster-fanout-30", "cluster-fanout-30-p99",
		"receipts", "receipts-p99", "presence-fanout", "presence-fanout-spread",
	} {
		l, ok := got[name]
		switch {
		case (name == "pair-durable-pg" || strings.HasPrefix(name, "cluster-")) && !withPG:
			t.Logf("PostgreSQL not reachable: no %s", name)
		case !ok:
			t.Errorf("no %s line", name)
		case name == "idle":
			// 50 devices are within the heap's noise: only check it ran.
		case l.Value <= 0 || l.Baseline <= 0:
			t.Errorf("%s: %v", name, l)
		}
	}
	if n := strings.Count(out.String(), "scenario="); n != len(lines) {
		t.Errorf("%d lines printed, %d returned", n, len(lines))
	}
}

// TestSuiteOnly checks that a suite asked for a step it does not have
// refuses before it starts anything.
func TestSuiteOnly(t *testing.T) {
	_, err := bench.RunSuite(t.Context(), bench.SuiteOptions{Qimd: "/nonexistent/qimd", Dir: t.TempDir(), Only: []string{"pair", "no-such-step"}})
	if err == nil || !strings.Contains(err.Error(), `"no-such-step"`) {
		t.Fatalf("got %v, want an error naming the unknown step", err)
	}
}

package bench_test

import (
	"context"
	"strings"
	"testing"

	"github.com/qim-im/qim/bench"
)

func TestMigrate(t *testing.T) {
	if raceDetector {
		// quic-go reads the server's transport parameters in OpenStreamSync
		// while its connection loop writes them, on a connection dialled
		// in 0-RTT (quic-go issue #4303, open): the resumes here tripped
		// the race detector once under load. TestSuiteQuick runs this
		// scenario in a binary built without -race.
		t.Skip("0-RTT resumes trip quic-go's data race #4303 under -race")
	}
	e, srv := startEnv(t)
	before := srv.Connects()
	r, err := bench.Migrate(context.Background(), e, bench.MigrateOptions{Switches: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("prepared p50 %v p90 %v; migrate p50 %v p90 %v; reconnect p50 %v p90 %v; resume p50 %v p90 %v (%d in 0-RTT); reconnect/migrate %.1f×",
		r.Prepared.P50, r.Prepared.P90, r.Migrate.P50, r.Migrate.P90, r.Reconnect.P50, r.Reconnect.P90,
		r.Resume.P50, r.Resume.P90, r.Resumed0RTT, r.Ratio())
	for _, s := range []bench.SwitchTimes{r.Prepared, r.Migrate, r.Reconnect, r.Resume} {
		if s.P50 <= 0 || s.P90 < s.P50 {
			t.Fatalf("bad figures: %+v", r)
		}
	}
	// Two connections to start with (alice, and bob from each network),
	// then one per reconnection and resume: migrations make none.
	if got, want := srv.Connects()-before, uint64(3+2*r.Switches); got != want {
		t.Errorf("the server opened %d sessions, want %d", got, want)
	}
}

func TestMigrateBadLocals(t *testing.T) {
	e, _ := startEnv(t)
	for _, tt := range []struct {
		name   string
		locals []string
		want   string
	}{
		{"one address", []string{"127.0.0.2"}, "want 2"},
		{"not an address", []string{"127.0.0.2", "wifi"}, "want an IP address"},
		{"not local", []string{"127.0.0.2", "192.0.2.1"}, "cannot bind 192.0.2.1"},
		{"the same twice", []string{"127.0.0.2", "127.0.0.2"}, "both"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := bench.Migrate(context.Background(), e, bench.MigrateOptions{Locals: tt.locals, Switches: 1})
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "bench: migrate: ") {
				t.Fatalf("got %v, want an error about %q", err, tt.want)
			}
		})
	}
}

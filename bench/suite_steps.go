package bench

import (
	"cmp"
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/qim-im/qim/bench/baseline"
	"github.com/qim-im/qim/internal/pgdb"
)

// pair: bare echo, then pair-ephemeral at its peak and at half of it, then
// the store baseline and pair-durable.
func (s *suite) pair(ctx context.Context) error {
	o := s.o.Pair
	o.defaults()
	s.progressf("baseline: echo, %d connections x %d in flight", o.Pairs, o.Window)
	echo, echoCPU, err := s.echo(ctx, baseline.EchoOptions{Conns: o.Pairs, Window: o.Window, Size: o.Size, Duration: o.Duration})
	if err != nil {
		return err
	}
	o.Offline = false
	eph, err := Pair(ctx, s.qim, o)
	if err != nil {
		return err
	}
	s.emit(Line{"pair-ephemeral", eph.Rate(), "msgs/s", echo.Rate()})
	s.emit(Line{"pair-ephemeral-cpu", eph.CPUPerMsg(), "us/msg", echoCPU})

	// Latency at half the peak rate, against the bare echo at half its own.
	// The paced runs keep at most 4 sends in flight per sender: at half the
	// peak fewer than one is in flight on average, and 1,600 goroutines
	// waking on the pacer's timers would measure the load generator's own
	// scheduling on these 2 cores.
	paced := min(o.Window, 4)
	s.progressf("baseline: echo at half its peak, %.0f msgs/s", echo.Rate()/2)
	echoHalf, _, err := s.echo(ctx, baseline.EchoOptions{Conns: o.Pairs, Window: paced, Size: o.Size, Duration: o.Duration, Rate: echo.Rate() / 2})
	if err != nil {
		return err
	}
	half := o
	half.Rate, half.Window = eph.Rate()/2, paced
	h, err := Pair(ctx, s.qim, half)
	if err != nil {
		return err
	}
	s.emit(Line{"pair-ephemeral-half-rate", h.Rate(), "msgs/s", echoHalf.Rate()})
	s.emit(Line{"pair-ephemeral-p50", ms(h.Latency.P50), "ms", ms(echoHalf.P50)})
	s.emit(Line{"pair-ephemeral-p99", ms(h.Latency.P99), "ms", ms(echoHalf.P99)})
	s.emit(Line{"pair-ephemeral-p999", ms(h.Latency.P999), "ms", ms(echoHalf.P999)})

	writers := o.Pairs * o.Window
	s.progressf("baseline: Pebble synced commits, %d writers", writers)
	st, err := StoreBaseline(ctx, StoreOptions{Dir: filepath.Join(s.o.Dir, "pebble"), Writers: writers, Duration: o.Duration})
	if err != nil {
		return err
	}
	o.Offline = true
	dur, err := Pair(ctx, s.qim, o)
	if err != nil {
		return err
	}
	s.emit(Line{"pair-durable", dur.Rate(), "msgs/s", st.Rate()})
	s.emit(Line{"pair-durable-p99", ms(dur.Latency.P99), "ms", ms(echo.P99)})
	s.emit(Line{"pair-durable-cpu", dur.CPUPerMsg(), "us/msg", echoCPU})
	return nil
}

// echo runs the bare echo and returns it with the baseline server's CPU
// microseconds per echoed message.
func (s *suite) echo(ctx context.Context, o baseline.EchoOptions) (baseline.EchoResult, float64, error) {
	before, _ := Scrape(ctx, s.bMet, false)
	r, err := baseline.Echo(ctx, s.base, s.bTLS, o)
	if err != nil {
		return r, 0, fmt.Errorf("bench: baseline echo: %w", err)
	}
	after, _ := Scrape(ctx, s.bMet, false)
	cpu := 0.0
	if r.Msgs > 0 {
		cpu = (after.CPU() - before.CPU()) * 1e6 / float64(r.Msgs)
	}
	return r, cpu, nil
}

func (s *suite) fanout(ctx context.Context) error {
	sizes := s.o.Fanout
	if len(sizes) == 0 {
		sizes = []int{100, 1000, 10000}
	}
	bare := make(map[int]baseline.FanoutResult)
	for _, n := range sizes {
		s.progressf("baseline: fan-out to %d connections", n-1)
		msgs := s.o.FanoutMessages
		if msgs == 0 {
			msgs = fanoutMessages(n)
		}
		r, err := baseline.Fanout(ctx, s.base, s.bTLS, baseline.FanoutOptions{Subscribers: n - 1, Messages: msgs, Size: 100})
		if err != nil {
			return fmt.Errorf("bench: baseline fan-out %d: %w", n, err)
		}
		bare[n] = r
	}
	rs, err := Fanout(ctx, s.qim, FanoutOptions{Members: sizes, Messages: s.o.FanoutMessages})
	for _, r := range rs {
		b := bare[r.Members]
		s.emit(Line{fmt.Sprintf("fanout-%d", r.Members), r.Rate(), "deliveries/s", b.Rate()})
		s.emit(Line{fmt.Sprintf("fanout-%d-p99", r.Members), ms(r.LastRecipient.P99), "ms", ms(b.P99)})
	}
	return err
}

// fanoutMessages is how many messages a fan-out to n sends: enough for
// about 200,000 deliveries, at least 20.
func fanoutMessages(n int) int { return max(20, 200000/(n-1)) }

func (s *suite) idle(ctx context.Context) error {
	n := s.o.IdleDevices
	if n == 0 {
		n = 2000
	}
	s.progressf("baseline: %d idle connections", n)
	before, err := Scrape(ctx, s.bMet, true)
	if err != nil {
		return err
	}
	conns, err := baseline.Idle(ctx, s.base, s.bTLS, n)
	if err != nil {
		return fmt.Errorf("bench: baseline idle: %w", err)
	}
	time.Sleep(time.Second)
	after, err := Scrape(ctx, s.bMet, true)
	conns.Close()
	if err != nil {
		return err
	}
	bareHeap, bareRSS := (after.Heap()-before.Heap())/float64(n), (after.RSS()-before.RSS())/float64(n)
	r, err := Idle(ctx, s.qim, IdleOptions{Devices: n})
	if err != nil {
		return err
	}
	s.emit(Line{"idle", r.HeapPerDevice / 1024, "KiB-heap/device", bareHeap / 1024})
	s.emit(Line{"idle-rss", r.RSSPerDevice / 1024, "KiB-rss/device", bareRSS / 1024})
	s.emit(Line{"idle-cpu", r.IdleCPU * 100, "%cpu", 0})
	return nil
}

func (s *suite) connect(ctx context.Context) error {
	o := s.o.Connect
	o.Concurrency = cmp.Or(o.Concurrency, 32)
	if o.Duration == 0 {
		o.Duration = 5 * time.Second
	}
	s.progressf("baseline: full handshakes, %d at a time", o.Concurrency)
	b, err := baseline.Handshakes(ctx, s.base, s.bTLS, baseline.HandshakeOptions{Concurrency: o.Concurrency, Duration: o.Duration})
	if err != nil {
		return fmt.Errorf("bench: baseline handshakes: %w", err)
	}
	r, err := Connect(ctx, s.qim, o)
	if err != nil {
		return err
	}
	s.emit(Line{"connect", r.Rate(), "connects/s", b.Rate()})
	return nil
}

func (s *suite) migrate(ctx context.Context) error {
	o := s.o.Migrate
	n := cmp.Or(o.Switches, 20)
	s.progressf("baseline: %d bare quic-go migrations", n)
	b, err := baseline.Migrate(ctx, s.base, s.bTLS, n, "127.0.0.2", "127.0.0.3")
	if err != nil {
		return fmt.Errorf("bench: baseline migrate: %w", err)
	}
	r, err := Migrate(ctx, s.qim, o)
	if err != nil {
		return err
	}
	// Unprepared, a migration probes the new path first, as the bare one
	// does from AddPath; a prepared one pays only for the switch.
	s.emit(Line{"migrate", ms(r.Migrate.P50), "ms", ms(b.Median)})
	s.emit(Line{"migrate-prepared", ms(r.Prepared.P50), "ms", ms(b.MedianAfterSwitch)})
	// How much sooner than a reconnect or a 0-RTT resume a migration
	// delivers: the ratio is the speed-up.
	s.emit(Line{"migrate-reconnect", ms(r.Reconnect.P50), "ms", ms(r.Migrate.P50)})
	s.emit(Line{"migrate-resume", ms(r.Resume.P50), "ms", ms(r.Migrate.P50)})
	return nil
}

// pairPG runs pair-durable against a second qimd whose store is
// PostgreSQL (a new database on o.Postgres, dropped after), beside bare pgx
// committing batches of the size qimd's committer made in the same run.
func (s *suite) pairPG(ctx context.Context) error {
	return s.pairOnPG(ctx, "pair-durable-pg", "qimd-pg", 1)
}

// pairOnPG runs pair-durable on nodes qimd nodes named name (one qimd, or
// a cluster, see startOnPG) on a new database of o.Postgres (dropped
// after), each pair's sender on one node and its receiver on the next, and
// emits the figure step and its p99. Its baseline is bare pgx committing
// batches of the size the nodes' committers made on average, run once the
// nodes are killed, with the cores to itself.
func (s *suite) pairOnPG(ctx context.Context, step, name string, nodes int) error {
	if s.o.Postgres == "" {
		s.progressf("%s: skipped (no --postgres)", step)
		return nil
	}
	o := s.o.Pair
	o.defaults()
	o.Offline = true
	dbURL, drop, err := pgdb.Create(ctx, s.o.Postgres, "qimbench_")
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	defer drop()
	envs, stop, err := s.startOnPG(ctx, name, nodes, dbURL)
	if err != nil {
		return err
	}
	defer stop()
	before := scrapeAll(ctx, envs)
	dur, err := PairAcross(ctx, envs, o)
	if err != nil {
		return err
	}
	after := scrapeAll(ctx, envs)
	stop() // the baseline has the cores to itself
	batch := commitBatch(before, after)
	s.progressf("baseline: bare pgx, batches of %d messages (qimd's average) over %d conversations", batch, o.Pairs)
	base, err := PGBaseline(ctx, PGOptions{URL: dbURL, Convs: o.Pairs, Batch: batch, Size: o.Size, Duration: o.Duration})
	if err != nil {
		return err
	}
	s.emit(Line{step, dur.Rate(), "msgs/s", base.Rate()})
	s.emit(Line{step + "-p99", ms(dur.Latency.P99), "ms", 0})
	return nil
}

// commitBatch is the average number of messages per commit of the store's
// committer between two scrapes, rounded; 64 if it made none.
func commitBatch(before, after Sample) int {
	const commits = "qim_store_commit_messages"
	n := after.Get(commits) - before.Get(commits)
	if n <= 0 {
		return 64
	}
	return max(1, int((after.Get(commits+"_sum")-before.Get(commits+"_sum"))/n+0.5))
}

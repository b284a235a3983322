package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/qim-im/qim/bench"
	"github.com/qim-im/qim/bench/baseline"
	"github.com/qim-im/qim/certs"
)

func (e *env) benchCommand() *cli.Command {
	common := []cli.Flag{
		&cli.StringFlag{Name: "secret", Usage: "`FILE` holding the application's token secret, in hex (default: data/apps/ORG/APPKEY.secret); bench users get tokens minted from it", EnvVars: envVars("bench-secret")},
		&cli.StringFlag{Name: "metrics", Usage: "`URL` of the server's metrics endpoint (qimd serve --metrics), for server CPU and memory figures", EnvVars: envVars("bench-metrics")},
		&cli.StringFlag{Name: "prefix", Usage: "`PREFIX` of the user and group names the bench makes up (default: bench-RANDOM)"},
		&cli.StringFlag{Name: "cpuprofile", Usage: "write a CPU profile of the load generator itself to `FILE`"},
	}
	withCommon := func(fs ...cli.Flag) []cli.Flag { return append(fs, common...) }
	return &cli.Command{
		Name: "bench",
		Before: func(cCtx *cli.Context) error {
			// The load generator's own garbage collection would show in
			// every figure it measures on a shared machine, the baselines'
			// included: let its heap grow further between collections (10-13%
			// more msgs/s in qim bench pair). The servers, the baseline's
			// (quic-server) included, keep Go's default.
			if os.Getenv("GOGC") == "" && cCtx.Args().First() != "quic-server" {
				debug.SetGCPercent(400)
			}
			return nil
		},
		After: func(*cli.Context) error {
			if e.stopProfile != nil {
				e.stopProfile()
				e.stopProfile = nil
			}
			return nil
		},
		Usage: "load-test a qim server (see docs/BENCHMARKS.md)",
		Description: "Each scenario connects made-up users of one application, minting their tokens from the\n" +
			"application's secret, runs, and prints a summary. Progress goes to standard error.\n" +
			"The server should run without per-user limits (qimd serve --send-rate -1).",
		Subcommands: []*cli.Command{
			{
				Name:  "pair",
				Usage: "C sender/receiver pairs: delivered msgs/s, latency, server CPU per message",
				Flags: withCommon(
					&cli.IntFlag{Name: "pairs", Value: 50, Usage: "sender/receiver `PAIRS`"},
					&cli.IntFlag{Name: "window", Value: 32, Usage: "sends in flight per sender"},
					&cli.BoolFlag{Name: "offline", Usage: "store every message (synced) before its ack"},
					&cli.Float64Flag{Name: "rate", Usage: "total send `RATE` in msgs/s (0: as fast as acks come back)"},
					&cli.IntFlag{Name: "size", Value: 100, Usage: "text `BYTES` per message"},
					&cli.DurationFlag{Name: "warmup", Value: time.Second},
					&cli.DurationFlag{Name: "duration", Value: 10 * time.Second, Usage: "measured time"},
				),
				Action: e.benchPair,
			},
			{
				Name:  "fanout",
				Usage: "one sender to groups of online members: deliveries/s, send to last recipient p99",
				Flags: withCommon(
					&cli.IntSliceFlag{Name: "members", Value: cli.NewIntSlice(100, 1000, 10000), Usage: "group `SIZES`, sender included"},
					&cli.IntFlag{Name: "messages", Usage: "messages per group (0: about 200,000 deliveries)"},
					&cli.IntFlag{Name: "window", Value: 16, Usage: "sends in flight"},
					&cli.BoolFlag{Name: "ephemeral", Usage: "send with offline=false (default: stored)"},
				),
				Action: e.benchFanout,
			},
			{
				Name:  "idle",
				Usage: "N connected idle devices: server heap and RSS per device, idle CPU (needs --metrics)",
				Flags: withCommon(
					&cli.IntFlag{Name: "devices", Value: 1000},
					&cli.DurationFlag{Name: "window", Value: 5 * time.Second, Usage: "how long idle CPU is measured"},
				),
				Action: e.benchIdle,
			},
			{
				Name:  "connect",
				Usage: "connects/s, each a full handshake, CONNECT and its answer",
				Flags: withCommon(
					&cli.IntFlag{Name: "concurrency", Value: 32},
					&cli.DurationFlag{Name: "duration", Value: 10 * time.Second},
				),
				Action: e.benchConnect,
			},
			e.benchMigrateCommand(withCommon),
			{
				Name:  "suite",
				Usage: "make bench: start qimd and a bare quic-go server, run every scenario and its baseline, print scenario=... lines",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "qimd", Value: "bin/qimd", Usage: "qimd `BINARY` to run"},
					&cli.StringFlag{Name: "dir", Usage: "working `DIR` (default: a temporary directory, removed after)"},
					&cli.BoolFlag{Name: "quick", Usage: "small, short runs (a smoke test of the suite)"},
					&cli.StringFlag{Name: "postgres", EnvVars: []string{"QIM_BENCH_POSTGRES"}, Usage: "PostgreSQL server `URL` for pair-durable-pg, cluster-pair-durable and cluster-fanout (each creates a new database on it, dropped after); empty skips them"},
					&cli.StringFlag{Name: "only", Usage: "run only these `STEPS`, comma-separated: " + strings.Join(bench.Steps(), ", ") + " (default: all)"},
					&cli.IntFlag{Name: "presence-watchers", DefaultText: "1,000; 50 with --quick", Usage: "`N` watching contacts in presence-fanout"},
				},
				Action: e.benchSuite,
			},
			{
				Name:   "quic-server",
				Usage:  "the bare quic-go baseline server that suite runs",
				Hidden: true,
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "listen", Value: "127.0.0.1:0"},
					&cli.StringFlag{Name: "metrics", Value: "127.0.0.1:0"},
					&cli.StringFlag{Name: "cert", Required: true},
					&cli.StringFlag{Name: "key", Required: true},
				},
				Action: e.benchQUICServer,
			},
		},
	}
}

// benchEnv builds the scenario environment from the global and common flags.
func (e *env) benchEnv(cCtx *cli.Context) (*bench.Env, error) {
	g := e.g
	addrs, err := serverAddrs(g.server)
	if err != nil {
		return nil, err
	}
	if len(addrs) > 1 {
		return nil, fmt.Errorf("qim: bench: --server %q: give one node: a benchmark measures one server", g.server)
	}
	host, _, _ := net.SplitHostPort(addrs[0])
	tlsConf, err := certs.ClientTLS(g.ca, g.insecure, host)
	if err != nil {
		return nil, err
	}
	file := cCtx.String("secret")
	if file == "" {
		file = filepath.Join("data", "apps", g.org, g.appkey+".secret")
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("qim: bench: the application's secret: %w (give --secret FILE)", err)
	}
	secret, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(secret) < 16 {
		return nil, fmt.Errorf("qim: bench: %s is not a hex secret", file)
	}
	if f := cCtx.String("cpuprofile"); f != "" {
		stop, err := startCPUProfile(f)
		if err != nil {
			return nil, err
		}
		e.stopProfile = stop
	}
	prefix := cCtx.String("prefix")
	if prefix == "" {
		prefix = "bench-" + randomHex(3)
	}
	return &bench.Env{
		Addr: addrs[0], TLS: tlsConf, Org: g.org, Appkey: g.appkey, Secret: secret,
		Prefix: prefix, Metrics: strings.TrimSuffix(cCtx.String("metrics"), "/"), Progress: e.stderr,
	}, nil
}

func (e *env) benchPair(cCtx *cli.Context) error {
	be, err := e.benchEnv(cCtx)
	if err != nil {
		return err
	}
	o := bench.PairOptions{
		Pairs: cCtx.Int("pairs"), Window: cCtx.Int("window"), Offline: cCtx.Bool("offline"), Rate: cCtx.Float64("rate"),
		Size: cCtx.Int("size"), Warmup: cCtx.Duration("warmup"), Duration: cCtx.Duration("duration"),
	}
	r, err := bench.Pair(cCtx.Context, be, o)
	if r.Elapsed > 0 {
		fmt.Fprintf(e.stdout, "pair: %d pairs x %d in flight, offline=%v, %v\n", o.Pairs, o.Window, o.Offline, r.Elapsed.Round(time.Millisecond))
		fmt.Fprintf(e.stdout, "  delivered   %.0f msgs/s (%d messages, %d sends acknowledged, %d failed)\n", r.Rate(), r.Delivered, r.Sent, r.Errors)
		fmt.Fprintf(e.stdout, "  latency     p50 %v  p99 %v  p999 %v  max %v\n", r.Latency.P50, r.Latency.P99, r.Latency.P999, r.Latency.Max)
		if r.ServerCPU > 0 {
			fmt.Fprintf(e.stdout, "  server CPU  %.1f µs/msg\n", r.CPUPerMsg())
		}
		if r.FirstErr != nil {
			fmt.Fprintf(e.stdout, "  first error %v\n", r.FirstErr)
		}
	}
	return err
}

func (e *env) benchFanout(cCtx *cli.Context) error {
	be, err := e.benchEnv(cCtx)
	if err != nil {
		return err
	}
	rs, err := bench.Fanout(cCtx.Context, be, bench.FanoutOptions{
		Members: cCtx.IntSlice("members"), Messages: cCtx.Int("messages"), Window: cCtx.Int("window"), Ephemeral: cCtx.Bool("ephemeral"),
	})
	for _, r := range rs {
		fmt.Fprintf(e.stdout, "fanout-%d: %d messages, %d deliveries in %v: %.0f deliveries/s; send to last recipient p50 %v p99 %v",
			r.Members, r.Messages, r.Deliveries, r.Elapsed.Round(time.Millisecond), r.Rate(), r.LastRecipient.P50, r.LastRecipient.P99)
		if r.ServerCPU > 0 {
			fmt.Fprintf(e.stdout, "; server CPU %.2f µs/delivery", r.ServerCPU*1e6/float64(max(r.Deliveries, 1)))
		}
		fmt.Fprintln(e.stdout)
	}
	return err
}

func (e *env) benchIdle(cCtx *cli.Context) error {
	be, err := e.benchEnv(cCtx)
	if err != nil {
		return err
	}
	r, err := bench.Idle(cCtx.Context, be, bench.IdleOptions{Devices: cCtx.Int("devices"), Window: cCtx.Duration("window")})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "idle: %d devices: %.1f KiB heap and %.1f KiB RSS per device; idle CPU %.2f%% of a core\n",
		r.Devices, r.HeapPerDevice/1024, r.RSSPerDevice/1024, r.IdleCPU*100)
	return nil
}

func (e *env) benchConnect(cCtx *cli.Context) error {
	be, err := e.benchEnv(cCtx)
	if err != nil {
		return err
	}
	r, err := bench.Connect(cCtx.Context, be, bench.ConnectOptions{Concurrency: cCtx.Int("concurrency"), Duration: cCtx.Duration("duration")})
	if r.Elapsed > 0 {
		fmt.Fprintf(e.stdout, "connect: %.0f connects/s (%d in %v, %d failed); one connect p50 %v p99 %v\n",
			r.Rate(), r.Connects, r.Elapsed.Round(time.Millisecond), r.Errors, r.Latency.P50, r.Latency.P99)
		if r.FirstErr != nil {
			fmt.Fprintf(e.stdout, "  first error %v\n", r.FirstErr)
		}
	}
	return err
}

func (e *env) benchSuite(cCtx *cli.Context) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	o := bench.SuiteOptions{Qimd: cCtx.String("qimd"), Qim: self, Dir: cCtx.String("dir"), Postgres: cCtx.String("postgres"), Out: e.stdout, Progress: e.stderr}
	if cCtx.Bool("quick") {
		o.Quick()
	}
	if n := cCtx.Int("presence-watchers"); n > 0 {
		o.Presence.Watchers = n
	}
	if only := cCtx.String("only"); only != "" {
		o.Only = strings.Split(only, ",")
	}
	_, err = bench.RunSuite(cCtx.Context, o)
	return err
}

func (e *env) benchQUICServer(cCtx *cli.Context) error {
	tlsConf, err := certs.LoadServerTLS(cCtx.String("cert"), cCtx.String("key"))
	if err != nil {
		return err
	}
	err = baseline.Run(cCtx.Context, cCtx.String("listen"), cCtx.String("metrics"), tlsConf, func(q, m net.Addr) {
		fmt.Fprintf(e.stderr, "baseline quic server on %s, metrics on http://%s\n", q, m)
	})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func (e *env) benchMigrateCommand(withCommon func(...cli.Flag) []cli.Flag) *cli.Command {
	return &cli.Command{
		Name:  "migrate",
		Usage: "time from a network switch to the next delivered message: migration, prepared migration, reconnect, 0-RTT resume",
		Flags: withCommon(
			&cli.StringSliceFlag{Name: "locals", Value: cli.NewStringSlice("127.0.0.2", "127.0.0.3"), Usage: "two local `ADDRESSES`, one per network, that reach the server"},
			&cli.IntFlag{Name: "switches", Value: 20, Usage: "switches of each way"},
		),
		Action: func(cCtx *cli.Context) error {
			be, err := e.benchEnv(cCtx)
			if err != nil {
				return err
			}
			r, err := bench.Migrate(cCtx.Context, be, bench.MigrateOptions{Locals: cCtx.StringSlice("locals"), Switches: cCtx.Int("switches")})
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "migrate: %d switches of each way, from the switch to the next message delivered (p50 / p90)\n", r.Switches)
			for _, w := range []struct {
				name string
				t    bench.SwitchTimes
			}{{"prepared migration", r.Prepared}, {"migration", r.Migrate}, {"0-RTT resume", r.Resume}, {"reconnect", r.Reconnect}} {
				fmt.Fprintf(e.stdout, "  %-19s %8.2f ms %8.2f ms\n", w.name, ms(w.t.P50), ms(w.t.P90))
			}
			fmt.Fprintf(e.stdout, "  migration delivers %.1fx sooner than a reconnect (prepared: %.1fx); %d of %d resumes in 0-RTT\n",
				r.Ratio(), r.PreparedRatio(), r.Resumed0RTT, r.Switches)
			return nil
		},
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// startCPUProfile profiles the load generator until stop is called (by the
// bench command's After).
func startCPUProfile(file string) (stop func(), err error) {
	f, err := os.Create(file)
	if err != nil {
		return nil, fmt.Errorf("qim: bench: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("qim: bench: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

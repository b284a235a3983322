package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/qim-im/qim/certs"
	"github.com/qim-im/qim/daemon"
)

// SuiteOptions configures RunSuite.
type SuiteOptions struct {
	Qimd string // the qimd binary
	Qim  string // the qim binary, which serves the baseline (qim bench quic-server)
	Dir  string // working directory, made if missing and kept; "" means a new temporary one, removed after

	// The scenarios' shapes; zero values take each scenario's defaults.
	Pair           PairOptions
	Fanout         []int
	FanoutMessages int // messages per group; 0 means enough for about 200,000 deliveries
	IdleDevices    int
	Connect        ConnectOptions
	Migrate        MigrateOptions
	// ClusterFanout is the group size of cluster-fanout; 0 means 1,000.
	ClusterFanout int
	// Receipts shapes receipts and its pair-durable baseline (which takes
	// Pair's warm-up and duration).
	Receipts ReceiptsOptions
	// Presence shapes presence-fanout; a zero Gap means five of its
	// qimd's coalescing windows (10 ms each).
	Presence PresenceOptions
	// Postgres is a PostgreSQL server (postgres:// URL) for the scenarios
	// of qimd on PostgreSQL: pair-durable-pg, which runs a second qimd with
	// --store on a new database of it, cluster-pair-durable and
	// cluster-fanout, which run three qimd nodes as a cluster (and one
	// more qimd, cluster-fanout's baseline), each on a new database of it.
	// "" skips them.
	Postgres string
	// Only, if not empty, names the steps to run (Steps lists them); the
	// others are skipped.
	Only []string

	Out      io.Writer // one Line per figure
	Progress io.Writer // progress lines; nil means none
}

// Quick makes every scenario small and short: a smoke test of the suite,
// whose figures mean little.
func (o *SuiteOptions) Quick() {
	o.Pair = PairOptions{Pairs: 4, Window: 4, Warmup: 200 * time.Millisecond, Duration: time.Second}
	o.Fanout = []int{10, 50}
	o.FanoutMessages = 50
	o.IdleDevices = 50
	o.Connect = ConnectOptions{Concurrency: 4, Duration: time.Second}
	o.Migrate = MigrateOptions{Switches: 3}
	o.ClusterFanout = 30
	o.Receipts = ReceiptsOptions{Pairs: 4, Window: 4, Messages: 200}
	o.Presence = PresenceOptions{Watchers: 50, Changes: 2}
}

// Steps are the names of the suite's steps, in the order they run, for
// SuiteOptions.Only. A step emits one scenario's lines or several:
// "pair" is pair-ephemeral (at its peak and at half of it) and
// pair-durable, "fanout" is every fanout-N, and "cluster-fanout" is
// cluster-fanout-N; the names of the other steps' lines start with theirs.
func Steps() []string {
	return []string{"idle", "pair", "receipts", "pair-durable-pg", "connect", "migrate",
		"cluster-pair-durable", "cluster-fanout", "presence-fanout", "fanout"}
}

// RunSuite is `make bench`: it starts qimd and the bare quic-go baseline
// server as two processes of their own on loopback, runs every scenario
// against qimd and the same shape against the baseline, one after the
// other, and writes a Line per figure to o.Out as soon as it is known.
// With o.Only, it runs those steps only.
func RunSuite(ctx context.Context, o SuiteOptions) ([]Line, error) {
	for _, name := range o.Only {
		if !slices.Contains(Steps(), name) {
			return nil, fmt.Errorf("bench: no step %q in the suite (steps: %s)", name, strings.Join(Steps(), ", "))
		}
	}
	if o.Dir == "" {
		dir, err := os.MkdirTemp("", "qim-bench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		o.Dir = dir
	} else if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	s := &suite{o: o, progress: o.Progress}
	defer s.stop()
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	// Idle comes first, on a fresh server, and fan-out last: the memory of
	// its 10,000 devices takes a while to go. The order is Steps'.
	steps := map[string]func(context.Context) error{
		"idle": s.idle, "pair": s.pair, "receipts": s.receipts, "pair-durable-pg": s.pairPG, "connect": s.connect,
		"migrate": s.migrate, "cluster-pair-durable": s.clusterPair, "cluster-fanout": s.clusterFanout,
		"presence-fanout": s.presenceFanout, "fanout": s.fanout,
	}
	var errs []error
	for _, name := range Steps() {
		if len(o.Only) > 0 && !slices.Contains(o.Only, name) {
			continue
		}
		if err := steps[name](ctx); err != nil {
			if ctx.Err() != nil {
				return s.lines, err
			}
			s.progressf("error: %v", err)
			errs = append(errs, err)
		}
	}
	return s.lines, errors.Join(errs...)
}

type suite struct {
	o        SuiteOptions
	progress io.Writer
	procs    []proc
	lines    []Line

	qim  *Env        // qimd
	base string      // the baseline server's address
	bTLS *tls.Config // trusts the baseline server
	bMet string      // the baseline server's metrics endpoint
}

func (s *suite) progressf(format string, args ...any) {
	if s.progress != nil {
		fmt.Fprintf(s.progress, format+"\n", args...)
	}
}

func (s *suite) emit(l Line) {
	s.lines = append(s.lines, l)
	if s.o.Out != nil {
		fmt.Fprintln(s.o.Out, l)
	}
}

// start runs qimd and the baseline server and waits until both answer.
func (s *suite) start(ctx context.Context) error {
	data := filepath.Join(s.o.Dir, "qimd")
	qAddr, qMet, bAddr, bMet := freeUDP(), freeTCP(), freeUDP(), freeTCP()
	var err error
	if s.qim, _, err = s.startQimd(ctx, "qimd", data, qAddr, qMet); err != nil {
		return err
	}
	certDir := daemon.CertsDir(data)
	p, err := s.spawnProc(ctx, "baseline", s.o.Qim, "bench", "quic-server", "--listen", bAddr, "--metrics", bMet,
		"--cert", filepath.Join(certDir, certs.ServerCertFile), "--key", filepath.Join(certDir, certs.ServerKeyFile))
	if err != nil {
		return err
	}
	s.bMet = "http://" + bMet
	if err := s.waitStarted(ctx, "baseline", p, s.bMet); err != nil {
		return err
	}
	s.base, s.bTLS = bAddr, s.qim.TLS.Clone()
	return nil
}

// startQimd runs a qimd named name (its log is name.log) with its data in
// data, waits until it answers, and returns the Env to reach it.
func (s *suite) startQimd(ctx context.Context, name, data, addr, metricsAddr string, extra ...string) (*Env, proc, error) {
	args := append([]string{"serve", "--data", data, "--listen", addr, "--metrics", metricsAddr,
		// The bench measures the server, not its abuse limits.
		"--send-rate", "-1", "--handshake-rate", "1e9", "--log-level", "warn"}, extra...)
	p, err := s.spawnProc(ctx, name, s.o.Qimd, args...)
	if err != nil {
		return nil, p, err
	}
	metURL := "http://" + metricsAddr
	if err := s.waitStarted(ctx, name, p, metURL); err != nil {
		return nil, p, err
	}
	secret, err := daemon.AppSecret(data, daemon.DemoOrg, daemon.DemoAppkey)
	if err != nil {
		return nil, p, err
	}
	tlsConf, err := certs.ClientTLS(filepath.Join(daemon.CertsDir(data), certs.CACertFile), false, "localhost")
	if err != nil {
		return nil, p, err
	}
	return &Env{Addr: addr, TLS: tlsConf, Org: daemon.DemoOrg, Appkey: daemon.DemoAppkey, Secret: secret,
		Metrics: metURL, Progress: s.progress}, p, nil
}

func (s *suite) spawnProc(ctx context.Context, name, bin string, args ...string) (proc, error) {
	log, err := os.Create(filepath.Join(s.o.Dir, name+".log"))
	if err != nil {
		return proc{}, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return proc{}, fmt.Errorf("bench: start %s: %w", name, err)
	}
	exited := make(chan struct{})
	p := proc{cmd, exited}
	s.procs = append(s.procs, p)
	go func() {
		cmd.Wait()
		log.Close()
		close(exited)
	}()
	return p, nil
}

// proc is a server the suite started; exited is closed once it has exited.
type proc struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

// stop ends the servers: SIGTERM, then SIGKILL after 10 s.
func (s *suite) stop() {
	for _, p := range s.procs {
		p.cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for _, p := range s.procs {
		select {
		case <-p.exited:
			continue
		case <-deadline.C:
		}
		// Out of time: kill this one and every one after it still running.
		for _, q := range s.procs {
			q.cmd.Process.Kill()
		}
		<-p.exited
	}
}

// waitStarted waits until the server p, named name, answers at its metrics
// endpoint url: for at most 30 s, and no longer than it runs. The error
// carries the end of its log.
func (s *suite) waitStarted(ctx context.Context, name string, p proc, url string) error {
	var err error
	deadline := time.After(30 * time.Second)
	for {
		if _, err = Scrape(ctx, url, false); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-p.exited:
			err = fmt.Errorf("it exited (%v) before answering at %s", p.cmd.ProcessState, url)
		case <-deadline:
		case <-time.After(50 * time.Millisecond):
			continue
		}
		log := filepath.Join(s.o.Dir, name+".log")
		return fmt.Errorf("bench: %s did not start (see %s): %w%s", name, log, err, logTail(log))
	}
}

// logTail returns the last lines of the log file at path, for an error
// message, or "" if it cannot be read.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	const max = 2000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return "\n" + path + " ends:\n" + string(b)
}

// handedOut holds every port freeUDP and freeTCP have returned in this
// process. A port is free only until someone binds it: the cluster scenarios
// pick each node's NATS port before any node starts, and without this a
// later pick (another node's QUIC/HTTPS or metrics port) could get the same
// number back from the kernel and one node would fail to start.
var handedOut struct {
	sync.Mutex
	ports map[int]bool
}

// claim records port as handed out; false if it already was.
func claim(port int) bool {
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports == nil {
		handedOut.ports = make(map[int]bool)
	}
	if handedOut.ports[port] {
		return false
	}
	handedOut.ports[port] = true
	return true
}

// freeUDP returns a 127.0.0.1 address whose UDP port, and the same TCP
// port (qimd's HTTPS), were free a moment ago and not handed out before.
func freeUDP() string {
	for {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			panic(err)
		}
		addr := c.LocalAddr().(*net.UDPAddr)
		ln, err := net.Listen("tcp", addr.String())
		c.Close()
		if err == nil {
			ln.Close()
			if claim(addr.Port) {
				return addr.String()
			}
		}
	}
}

// freeTCP returns a 127.0.0.1 address whose TCP port was free a moment ago
// and not handed out before.
func freeTCP() string {
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic(err)
		}
		addr := l.Addr().(*net.TCPAddr)
		l.Close()
		if claim(addr.Port) {
			return addr.String()
		}
	}
}

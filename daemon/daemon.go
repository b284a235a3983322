// Package daemon wires a complete qim server from its parts: the data
// directory, certificates, the embedded store, applications, the hub and the
// QUIC server. cmd/qimd and the tests start servers through it, so both run
// exactly the same server.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/qim-im/qim/certs"
	"github.com/qim-im/qim/metrics"
	"github.com/qim-im/qim/quicsrv"
	"github.com/qim-im/qim/session"
	"github.com/qim-im/qim/store/pebblestore"
)

// Config is a server's configuration. Zero values take the documented
// defaults.
type Config struct {
	// Listen is the UDP address to serve on. Empty means "127.0.0.1:4433".
	Listen string
	// PacketConn, if set, is the socket to serve on instead of listening on
	// Listen (tests use it to serve inside a network namespace). Close and
	// Shutdown close it.
	PacketConn net.PacketConn
	// DataDir holds the store, the certificates and the application
	// secrets. Empty means "./data".
	DataDir string
	// CertFile and KeyFile are the server's certificate and key. Empty
	// means DataDir/certs/server.pem and server.key, created with a
	// development CA on first start.
	CertFile, KeyFile string
	// Hosts are extra names and addresses for a generated certificate.
	Hosts []string
	// MaxFrame is the largest frame accepted. Zero means 64 KiB.
	MaxFrame int
	// AuthTimeout is how long a new connection has to authenticate. Zero
	// means 5 seconds.
	AuthTimeout time.Duration
	// SendRate and SendBurst limit the requests per second of one user
	// (session.Config); zero means the defaults, a negative SendRate no
	// limit. MaxGroupMembers bounds groups; zero means 10,000.
	SendRate        float64
	SendBurst       int
	MaxGroupMembers int
	// HandshakeRate is the rate of new connections above which the server
	// asks clients to prove their address (QUIC Retry) before it keeps any
	// state for them. Zero means 1,000 per second; negative means always.
	HandshakeRate float64
	// MaxUnauthenticated and MaxUnauthenticatedPerIP bound the connections
	// that have not authenticated yet, in total and per source IP address
	// (quicsrv.Server). Zero means 1,000 and 100; negative means no bound.
	MaxUnauthenticated      int
	MaxUnauthenticatedPerIP int
	// NoSync turns off fsync in the store. For benchmarks of everything but
	// the disk only; never in production.
	NoSync bool
	// StoreFS is the file system the store is kept on. Nil means the
	// operating system's. Tests pass one that injects faults (see
	// pebblestore.Options.FS).
	StoreFS vfs.FS
	// Metrics, if set, is the TCP address of an HTTP endpoint that serves
	// Prometheus metrics at /metrics and the runtime's profiles at
	// /debug/pprof/ (see metrics.Handler). Empty means none. Profiles
	// reveal the server's internals: the address must not be reachable
	// from outside.
	Metrics string
	// Logger receives the server's logs. Nil discards them.
	Logger *slog.Logger
}

// Daemon is a running server.
type Daemon struct {
	// Static after Start.
	cfg    Config
	logger *slog.Logger
	pc     net.PacketConn
	store  *pebblestore.Store
	hub    *session.Hub
	srv    *quicsrv.Server
	// The metrics endpoint; nil when Config.Metrics is empty.
	metricsLn   net.Listener
	metricsSrv  *http.Server
	metricsDone chan struct{} // closed when metricsSrv.Serve returns
	// Created lists what Start created on this first start (certificates,
	// the demo application), for the operator.
	Created []string

	serveErr chan error
}

// Start opens the data directory and starts serving. Stop it with Shutdown
// or Close.
func Start(cfg Config) (d *Daemon, err error) {
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:4433"
	}
	if cfg.DataDir == "" {
		cfg.DataDir = "data"
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	d = &Daemon{cfg: cfg, logger: logger, serveErr: make(chan error, 1)}
	defer func() {
		if err != nil {
			d.closeParts()
		}
	}()

	certFile, keyFile := cfg.CertFile, cfg.KeyFile
	if certFile == "" && keyFile == "" {
		var created bool
		certFile, keyFile, created, err = certs.EnsureServer(CertsDir(cfg.DataDir), cfg.Hosts)
		if err != nil {
			return nil, fmt.Errorf("daemon: certificates: %w", err)
		}
		if created {
			d.Created = append(d.Created, "development CA and server certificate in "+CertsDir(cfg.DataDir)+" (clients use --ca "+filepath.Join(CertsDir(cfg.DataDir), certs.CACertFile)+")")
		}
	} else if certFile == "" || keyFile == "" {
		return nil, errors.New("daemon: set both the certificate and the key")
	}
	tlsConf, err := certs.LoadServerTLS(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	keys, err := loadServerKeys(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	tlsConf.SetSessionTicketKeys([][32]byte{keys.ticket})

	d.store, err = pebblestore.Open(filepath.Join(cfg.DataDir, "store"), pebblestore.Options{Logger: logger, NoSync: cfg.NoSync, FS: cfg.StoreFS})
	if err != nil {
		return nil, fmt.Errorf("daemon: open store: %w", err)
	}
	createdApps, err := LoadApps(context.Background(), cfg.DataDir, d.store)
	if err != nil {
		return nil, err
	}
	d.Created = append(d.Created, createdApps...)

	var m *metrics.Metrics
	if cfg.Metrics != "" {
		m = metrics.New()
		if d.metricsLn, err = net.Listen("tcp", cfg.Metrics); err != nil {
			return nil, fmt.Errorf("daemon: metrics: %w", err)
		}
	}
	d.hub, err = session.NewHub(session.Config{
		Store:           d.store,
		Logger:          logger,
		MaxFrame:        cfg.MaxFrame,
		SendRate:        cfg.SendRate,
		SendBurst:       cfg.SendBurst,
		MaxGroupMembers: cfg.MaxGroupMembers,
		Metrics:         m,
	})
	if err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	if d.pc = cfg.PacketConn; d.pc == nil {
		udpAddr, err := net.ResolveUDPAddr("udp", cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("daemon: listen address: %w", err)
		}
		if d.pc, err = net.ListenUDP("udp", udpAddr); err != nil {
			return nil, fmt.Errorf("daemon: listen: %w", err)
		}
	}
	d.srv = &quicsrv.Server{TLSConfig: tlsConf, Hub: d.hub, Logger: logger, AuthTimeout: cfg.AuthTimeout, StatelessResetKey: &keys.reset, HandshakeRate: cfg.HandshakeRate, Metrics: m,
		MaxUnauthenticated: cfg.MaxUnauthenticated, MaxUnauthenticatedPerIP: cfg.MaxUnauthenticatedPerIP}
	go func() { d.serveErr <- d.srv.Serve(d.pc) }()
	if d.metricsLn != nil {
		d.serveMetrics(m)
	}
	return d, nil
}

// serveMetrics serves m on d.metricsLn until closeParts closes it.
func (d *Daemon) serveMetrics(m *metrics.Metrics) {
	d.metricsSrv = &http.Server{
		Handler:           m.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(d.logger.Handler(), slog.LevelWarn),
	}
	d.metricsDone = make(chan struct{})
	go func() {
		defer close(d.metricsDone)
		d.metricsSrv.Serve(d.metricsLn) // returns ErrServerClosed after Close
	}()
	d.logger.Info("serving metrics and profiles", "url", "http://"+d.metricsLn.Addr().String()+"/metrics")
}

// MetricsAddr returns the address of the metrics endpoint, or nil when
// Config.Metrics is empty.
func (d *Daemon) MetricsAddr() net.Addr {
	if d.metricsLn == nil {
		return nil
	}
	return d.metricsLn.Addr()
}

// Retries returns how many connection attempts had to validate their
// address (QUIC Retry) because of HandshakeRate.
func (d *Daemon) Retries() uint64 { return d.srv.Retries() }

// Hub returns the server's hub.
func (d *Daemon) Hub() *session.Hub { return d.hub }

// Addr returns the address the server is serving on.
func (d *Daemon) Addr() net.Addr { return d.pc.LocalAddr() }

// Wait blocks until the server stops serving and returns why.
func (d *Daemon) Wait() error {
	err := <-d.serveErr
	d.serveErr <- err
	return err
}

// Shutdown stops accepting connections, tells connected devices the server
// is going away, waits for them (until ctx ends), then flushes and closes
// the store.
func (d *Daemon) Shutdown(ctx context.Context) error {
	err := d.srv.Shutdown(ctx)
	if cerr := d.closeParts(); err == nil {
		err = cerr
	}
	return err
}

// Close stops everything at once, then flushes and closes the store.
func (d *Daemon) Close() error {
	d.srv.Close()
	return d.closeParts()
}

// closeParts closes what Start opened, in reverse order.
func (d *Daemon) closeParts() error {
	var errs []error
	if d.metricsSrv != nil {
		// Close, not Shutdown: a profile being taken must not hold the
		// daemon up.
		d.metricsSrv.Close()
		<-d.metricsDone
		d.metricsSrv = nil
	}
	if d.metricsLn != nil {
		d.metricsLn.Close() // in case Start failed before serving it
		d.metricsLn = nil
	}
	if d.pc != nil {
		errs = append(errs, d.pc.Close())
		if d.srv != nil {
			<-d.serveErr
		}
		d.pc = nil
	}
	if d.hub != nil {
		errs = append(errs, d.hub.Close())
		d.hub = nil
	}
	if d.store != nil {
		errs = append(errs, d.store.Close())
		d.store = nil
	}
	return errors.Join(errs...)
}

// CertsDir is where a data directory's generated certificates live.
func CertsDir(dataDir string) string { return filepath.Join(dataDir, "certs") }

// Package testserver starts real qim servers for tests: real QUIC on
// 127.0.0.1, a real Pebble store in a temporary directory, real
// certificates and tokens.
package testserver

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/qim-im/qim/auth"
	"github.com/qim-im/qim/certs"
	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/core"
	"github.com/qim-im/qim/daemon"
	"github.com/qim-im/qim/store"
	"github.com/qim-im/qim/store/pgstore"
)

// Options configures a test server. Zero values take defaults.
type Options struct {
	// DataDir is the server's data directory. Empty means t.TempDir().
	DataDir string
	// MaxFrame is the largest frame accepted. Zero means the default.
	MaxFrame int
	// Listen is the address to listen on. Empty means 127.0.0.1:0.
	Listen string
	// SendRate, SendBurst, MaxGroupMembers and HandshakeRate are the
	// server's limits (daemon.Config); zero means the defaults.
	SendRate        float64
	SendBurst       int
	MaxGroupMembers int
	HandshakeRate   float64
	// InvitesPerHour is the server's limit on invitations from non-contacts
	// (daemon.Config); zero means the default, negative no limit.
	InvitesPerHour int
	// DeviceMemory, TotalMemory and GroupCacheBytes are the server's memory
	// budgets (daemon.Config); zero means the defaults.
	DeviceMemory    int64
	TotalMemory     int64
	GroupCacheBytes int64
	// MaxUnauthenticated and MaxUnauthenticatedPerIP bound connections
	// that have not authenticated (daemon.Config); zero means the defaults.
	MaxUnauthenticated      int
	MaxUnauthenticatedPerIP int
	// AuthTimeout is the server's auth timeout. Zero means the default.
	AuthTimeout time.Duration
	// ListenPacket, if set, makes the server's socket (tests use it to
	// serve inside a network namespace). It is called again on Restart.
	// The server then serves no HTTP API (NoHTTP).
	ListenPacket func() (net.PacketConn, error)
	// Apps are extra applications, as "org/appkey", created before the
	// first start besides demo/demo.
	Apps []string
	// StoreFS is the file system of the server's store (daemon.Config),
	// at every start. Nil means the operating system's.
	StoreFS vfs.FS
	// Postgres, if set, is the URL of a PostgreSQL database (see
	// internal/pgtest) that the server uses as its store, opened at every
	// start and closed at every stop, instead of the embedded store.
	Postgres string
	// Store, if set, is the store of every start of the server, which the
	// server does not close (the caller does), in place of Postgres or the
	// embedded store. Several servers on one Store are nodes of a cluster
	// (see StartCluster).
	Store store.Store
	// Router carries events between sessions (daemon.Config.Router). Nil
	// means a LocalRouter of the server's own.
	Router core.Router
	// ServerID, NATS, NATSEmbed, NATSCluster, NATSRoutes and CatchUpEvery
	// make the server a node of a cluster (daemon.Config); StartCluster
	// sets them.
	ServerID     int
	NATS         string
	NATSEmbed    bool
	NATSCluster  string
	NATSRoutes   []string
	CatchUpEvery time.Duration
	// NATSNodes, for StartCluster, gives each node its NATS: node i
	// connects to NATSNodes[i%len(NATSNodes)] (its NATS option) first.
	NATSNodes []string
	// Metrics is the TCP address of the server's metrics endpoint
	// (daemon.Config), e.g. "127.0.0.1:0". Empty means none.
	Metrics string
	// NoHTTP turns the HTTP API off (daemon.Config): no HTTP/3, no TCP
	// listener.
	NoHTTP bool
	// Configure, if set, changes the server's configuration at every
	// start, after the options above are applied (for settings they do
	// not have, such as the push webhook's).
	Configure func(*daemon.Config)
	// MaxUpload, UploadQuota, HTTPAuthFailureBurst and PublicURL configure
	// the HTTP API (daemon.Config); zero values mean the defaults.
	MaxUpload            int64
	UploadQuota          int64
	HTTPAuthFailureBurst int
	PublicURL            string
}

// Server is a running test server.
type Server struct {
	// Addr is the server's UDP address, "127.0.0.1:port". It stays the same
	// across Restart.
	Addr string
	// CAFile is the development CA clients verify the server with.
	CAFile string
	// DataDir is the server's data directory.
	DataDir string
	// HTTPAddr is the TCP address of the HTTP API over HTTPS, the same
	// IP address and port as Addr; empty with Options.NoHTTP.
	HTTPAddr string
	// MetricsURL is the base URL of the metrics endpoint, e.g.
	// "http://127.0.0.1:port", when Options.Metrics is set. Its port
	// changes on Restart if Options.Metrics has port 0.
	MetricsURL string

	t     testing.TB
	opts  Options
	d     *daemon.Daemon
	store store.Store // opened for Options.Postgres, and closed; nil otherwise
}

// Start starts a server and stops it when the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.DataDir == "" {
		opts.DataDir = t.TempDir()
	}
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:0"
	}
	s := &Server{t: t, opts: opts, DataDir: opts.DataDir}
	for _, a := range append([]string{daemon.DemoOrg + "/" + daemon.DemoAppkey}, opts.Apps...) {
		org, appkey, _ := strings.Cut(a, "/")
		if _, err := daemon.AppSecret(opts.DataDir, org, appkey); err == nil {
			continue
		}
		if _, err := daemon.CreateApp(opts.DataDir, org, appkey); err != nil {
			t.Fatalf("testserver: %v", err)
		}
	}
	s.start(opts.Listen)
	s.CAFile = filepath.Join(daemon.CertsDir(opts.DataDir), certs.CACertFile)
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) start(listen string) {
	s.t.Helper()
	var logger *slog.Logger
	if os.Getenv("QIM_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	var err error
	st := s.opts.Store
	if st == nil && s.opts.Postgres != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		s.store, err = pgstore.Open(ctx, s.opts.Postgres, pgstore.Options{Logger: logger})
		cancel()
		if err != nil {
			s.t.Fatalf("testserver: %v", err)
		}
		st = s.store
	}
	// The port of a restarted server may still be held for a moment.
	for range 50 {
		var pc net.PacketConn
		if s.opts.ListenPacket != nil {
			if pc, err = s.opts.ListenPacket(); err != nil {
				time.Sleep(20 * time.Millisecond)
				continue
			}
		}
		cfg := daemon.Config{Store: st, Router: s.opts.Router,
			ServerID: s.opts.ServerID, NATS: s.opts.NATS, NATSEmbed: s.opts.NATSEmbed, NATSCluster: s.opts.NATSCluster, NATSRoutes: s.opts.NATSRoutes, CatchUpEvery: s.opts.CatchUpEvery, Listen: listen, PacketConn: pc, DataDir: s.opts.DataDir, MaxFrame: s.opts.MaxFrame, AuthTimeout: s.opts.AuthTimeout, Logger: logger,
			SendRate: s.opts.SendRate, SendBurst: s.opts.SendBurst, MaxGroupMembers: s.opts.MaxGroupMembers, InvitesPerHour: s.opts.InvitesPerHour, HandshakeRate: s.opts.HandshakeRate, StoreFS: s.opts.StoreFS, Metrics: s.opts.Metrics,
			DeviceMemory: s.opts.DeviceMemory, TotalMemory: s.opts.TotalMemory, GroupCacheBytes: s.opts.GroupCacheBytes,
			MaxUnauthenticated: s.opts.MaxUnauthenticated, MaxUnauthenticatedPerIP: s.opts.MaxUnauthenticatedPerIP,
			// A socket of another network namespace (ListenPacket) has no
			// TCP twin in this one: no HTTP API there.
			NoHTTP:    s.opts.NoHTTP || s.opts.ListenPacket != nil,
			MaxUpload: s.opts.MaxUpload, UploadQuota: s.opts.UploadQuota, HTTPAuthFailureBurst: s.opts.HTTPAuthFailureBurst, PublicURL: s.opts.PublicURL}
		if s.opts.Configure != nil {
			s.opts.Configure(&cfg)
		}
		s.d, err = daemon.Start(cfg)
		if err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		if s.store != nil {
			s.store.Close()
			s.store = nil
		}
		s.t.Fatalf("testserver: start: %v", err)
	}
	s.Addr = s.d.Addr().String()
	if a := s.d.HTTPAddr(); a != nil {
		s.HTTPAddr = a.String()
	}
	if a := s.d.MetricsAddr(); a != nil {
		s.MetricsURL = "http://" + a.String()
	}
}

// Stop stops the server (abruptly, like a crash of the network side, but
// with the store closed cleanly). It is safe to call twice.
func (s *Server) Stop() {
	if err := s.Close(); err != nil {
		s.t.Errorf("testserver: close: %v", err)
	}
}

// Close stops the server as Stop does, but returns the error of closing it
// instead of failing the test: a test that broke the store expects one. It
// is safe to call twice; the second call returns nil.
func (s *Server) Close() error {
	if s.d == nil {
		return nil
	}
	err := s.d.Close()
	s.d = nil
	return errors.Join(err, s.closeStore())
}

// closeStore closes the store opened for Options.Postgres, if any.
func (s *Server) closeStore() error {
	if s.store == nil {
		return nil
	}
	err := s.store.Close()
	s.store = nil
	return err
}

// Shutdown stops the server gracefully: devices are told GOING_AWAY.
func (s *Server) Shutdown() {
	if s.d == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.d.Shutdown(ctx); err != nil {
		s.t.Errorf("testserver: shutdown: %v", err)
	}
	s.d = nil
	if err := s.closeStore(); err != nil {
		s.t.Errorf("testserver: close store: %v", err)
	}
}

// Restart stops the server and starts it again on the same address and
// data directory.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start(s.Addr)
}

// Connects returns how many sessions (successful CONNECTs) the running
// server has opened since it started.
func (s *Server) Connects() uint64 { return s.d.Devices().Opened() }

// Retries returns how many connection attempts the running server asked
// to validate their address (QUIC Retry).
func (s *Server) Retries() uint64 { return s.d.Retries() }

// Buffered returns what the server buffers for devices and what its recent
// group messages cache holds, in bytes (core.Hub.BufferedBytes).
func (s *Server) Buffered() (sessions, cache int64) { return s.d.Hub().BufferedBytes() }

// ClientTLS returns a client TLS configuration that trusts the server.
func (s *Server) ClientTLS() *tls.Config {
	s.t.Helper()
	c, err := certs.ClientTLS(s.CAFile, false, "localhost")
	if err != nil {
		s.t.Fatalf("testserver: client TLS: %v", err)
	}
	return c
}

// Token returns a valid token for user of the demo application.
func (s *Server) Token(user string) string {
	return s.TokenFor(daemon.DemoOrg, daemon.DemoAppkey, user, time.Hour)
}

// TokenFor returns a token for user of any application in the data
// directory, valid for ttl (negative: already expired).
func (s *Server) TokenFor(org, appkey, user string, ttl time.Duration) string {
	s.t.Helper()
	secret, err := daemon.AppSecret(s.DataDir, org, appkey)
	if err != nil {
		s.t.Fatalf("testserver: %v", err)
	}
	return auth.Mint(secret, org, appkey, user, time.Now().Add(ttl))
}

// CreateApp adds an application; it takes effect at the next Restart.
func (s *Server) CreateApp(org, appkey string) {
	s.t.Helper()
	if _, err := daemon.CreateApp(s.DataDir, org, appkey); err != nil {
		s.t.Fatalf("testserver: %v", err)
	}
}

// ClientConfig returns the client configuration of user's device on the
// demo application of the server.
func (s *Server) ClientConfig(user, device string) client.Config {
	return client.Config{
		Addr:      s.Addr,
		TLSConfig: s.ClientTLS(),
		Org:       daemon.DemoOrg,
		Appkey:    daemon.DemoAppkey,
		User:      user,
		Token:     s.Token(user),
		Device:    device,
	}
}

// Dial connects a client with cfg, failing the test if it cannot, and
// closes it when the test ends.
func Dial(t testing.TB, cfg client.Config) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("dial %s/%s: %v", cfg.User, cfg.Device, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Daemon returns the running server's daemon.
func (s *Server) Daemon() *daemon.Daemon { return s.d }

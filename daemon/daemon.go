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
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/qim-im/qim/blob"
	"github.com/qim-im/qim/certs"
	"github.com/qim-im/qim/cluster"
	"github.com/qim-im/qim/core"
	"github.com/qim-im/qim/httpapi"
	"github.com/qim-im/qim/metrics"
	"github.com/qim-im/qim/push"
	"github.com/qim-im/qim/quicsrv"
	"github.com/qim-im/qim/session"
	"github.com/qim-im/qim/store"
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
	// AuthBackoffMax bounds the slow-down of failed CONNECTs from one IP
	// address (quicsrv.Server.AuthBackoffMax). Zero means 3 seconds;
	// negative turns it off.
	AuthBackoffMax time.Duration
	// SendRate and SendBurst limit the requests per second of one user
	// (core.Config); zero means the defaults, a negative SendRate no
	// limit. MaxGroupMembers bounds groups; zero means 10,000.
	SendRate        float64
	SendBurst       int
	MaxGroupMembers int
	// InvitesPerHour limits invitations from non-contacts per invitee
	// (core.Config); zero means 50, negative no limit.
	InvitesPerHour int
	// DeviceMemory and TotalMemory bound, in bytes, what the server buffers
	// for one device (session.Config) and for all devices (core.Config);
	// GroupCacheBytes bounds the recent group messages cache. Zero means
	// the defaults (1 MiB, 256 MiB, 64 MiB).
	DeviceMemory    int64
	TotalMemory     int64
	GroupCacheBytes int64
	// HandshakeRate is the rate of new connections above which the server
	// asks clients to prove their address (QUIC Retry) before it keeps any
	// state for them. Zero means 1,000 per second; negative means always.
	HandshakeRate float64
	// MaxUnauthenticated and MaxUnauthenticatedPerIP bound the connections
	// that have not authenticated yet, in total and per source IP address
	// (quicsrv.Server). Zero means 1,000 and 100; negative means no bound.
	MaxUnauthenticated      int
	MaxUnauthenticatedPerIP int
	// DedupWindow is how long a message's client_msg_id is remembered for
	// de-duplication (core.Config.DedupWindow). Zero means 7 days;
	// negative means forever.
	DedupWindow time.Duration
	// Store is the store to serve from. Nil means the embedded Pebble
	// store in DataDir/store, which the daemon opens and closes. A Store
	// given here belongs to the caller: the daemon does not close it (close
	// it after Shutdown or Close), and NoSync and StoreFS do not apply.
	Store store.Store
	// Router carries events between the sessions (core.Config.Router). Nil
	// means a core.LocalRouter: sessions of this process only.
	Router core.Router
	// NoSync turns off fsync in the embedded store. For benchmarks of
	// everything but the disk only; never in production.
	NoSync bool
	// StoreFS is the file system the embedded store is kept on. Nil means
	// the operating system's. Tests pass one that injects faults (see
	// pebblestore.Options.FS).
	StoreFS vfs.FS
	// AppsPoll is how often the server reads the application secret files
	// again, to notice applications removed or rotated (`qimd app remove`
	// and `rotate` also tell it at once, over the admin socket). Zero means
	// every 2 seconds; negative means never.
	AppsPoll time.Duration
	// Metrics, if set, is the TCP address of an HTTP endpoint that serves
	// Prometheus metrics at /metrics and the runtime's profiles at
	// /debug/pprof/ (see metrics.Handler). Empty means none. Profiles
	// reveal the server's internals: the address must not be reachable
	// from outside.
	Metrics string
	// ServerID is this node's id in a cluster, 1 to MaxServerID (65535):
	// the connection IDs it issues carry it (QUIC-LB, see QUICLB), so
	// that a QUIC-aware load balancer routes each packet to it, and its
	// stateless reset key is its own. Every node of a cluster has a
	// different id and a copy of the same DATA/keys/server.key. Zero means
	// a single node: random connection IDs, and the stateless reset key of
	// earlier versions.
	ServerID int
	// NATS and NATSEmbed make the server a node of a cluster, whose nodes
	// carry events to each other's sessions through NATS (a
	// cluster.NATSRouter; see docs/CLUSTER.md). NATS is the URL of an
	// external NATS server, or several separated by commas. NATSEmbed
	// runs a NATS server inside this process (NATSListen, NATSCluster,
	// NATSRoutes) and connects to it. A cluster needs a Store that every
	// node shares (PostgreSQL) and a different ServerID on every node;
	// Router must then be nil.
	NATS      string
	NATSEmbed bool
	// NATSListen is the embedded NATS server's client address. Empty
	// means 127.0.0.1 on a free port: only this process connects to it.
	NATSListen string
	// NATSCluster is the embedded NATS server's cluster address
	// (HOST:PORT) that the other members connect to. Empty means none:
	// the server is alone.
	NATSCluster string
	// NATSRoutes are the cluster addresses (nats://HOST:PORT) of other
	// members of the NATS cluster; one is enough, they gossip the rest.
	NATSRoutes []string
	// NoHTTP turns the HTTP API off. By default the server serves it on
	// its port three ways (web.go): HTTP/3 on the UDP socket, besides qim
	// (ALPN "h3"), and HTTPS (HTTP/1.1 and HTTP/2, TLS 1.3 only) on TCP at
	// the same IP address and port, which must then be free too; with
	// PacketConn, on its address.
	NoHTTP bool
	// Blobs stores the HTTP API's uploads. Nil means a directory store in
	// DATA/blobs (package blob/dirblob), which the daemon opens and closes;
	// a cluster's nodes need a shared one (blob/s3blob).
	Blobs blob.Store
	// PublicURL is the scheme and host of the upload URLs the HTTP API
	// hands out (httpapi.Config); empty means those of each upload request.
	PublicURL string
	// MaxUpload and UploadQuota are the HTTP API's upload limits
	// (httpapi.Config); zero means 10 MiB and 200 MiB per user per hour.
	MaxUpload   int64
	UploadQuota int64
	// HTTPAuthFailureBurst is how many failed authentications one IP
	// address may make to the HTTP API at once (httpapi.Config); zero means
	// 10, negative no limit.
	HTTPAuthFailureBurst int
	// CatchUpEvery is, in a cluster, how often every session re-reads its
	// inbox for messages whose events were lost (session.Config). Zero
	// means 30 s.
	CatchUpEvery time.Duration
	// PushWebhook, if set, is the URL of the application's push gateway:
	// the server POSTs it a signed notification for every stored message
	// that a recipient has not received on any device PushDelay later
	// (package push, daemon/push.go). Empty means no push notifications.
	// PushSecretFile holds the secret that signs them (its contents, less
	// surrounding white space); empty means PushSecretPath, created with a
	// random secret on first start. The nodes of a cluster need copies of
	// the same secret. PushNoPreview leaves the messages' text out of the
	// notifications. PushDelay zero means DefaultPushDelay. PushWorker
	// tunes the worker (retries, polling, limits, HTTP client; zero values
	// take push.Config's defaults); its Store, URL, Secret, Preview,
	// Logger and Metrics are the daemon's.
	PushWebhook    string
	PushSecretFile string
	PushNoPreview  bool
	PushDelay      time.Duration
	PushWorker     push.Config
	// NoReadReceipts hides every user's read cursor from the others
	// (core.Config.HideReadReceipts).
	NoReadReceipts bool
	// PresenceCoalesce is core.Config.PresenceCoalesce.
	PresenceCoalesce time.Duration
	// PresenceGroups shows presence between the members of small groups
	// too (core.Config.PresenceGroups).
	PresenceGroups bool
	// PresenceGrace is how long a user whose last connection ended stays
	// online to its contacts (docs/PROTOCOL.md 11.6). Zero means 5 s.
	PresenceGrace time.Duration
	// Logger receives the server's logs. Nil discards them.
	Logger *slog.Logger
}

// Daemon is a running server.
type Daemon struct {
	// Static after Start.
	cfg      Config
	logger   *slog.Logger
	pc       net.PacketConn
	store    store.Store // Config.Store, or the embedded store
	ownStore bool        // the daemon opened the store, and closes it
	apps     *KeyRing
	hub      *core.Hub
	devices  *session.Devices
	srv      *quicsrv.Server
	web      *webServer       // the HTTPS server (web.go); nil with Config.NoHTTP
	api      *httpapi.Handler // the HTTP API (api.go); nil with Config.NoHTTP
	blobs    blob.Store       // Config.Blobs, or the directory store
	ownBlobs bool             // the daemon opened blobs, and closes it
	// In a cluster (cluster.go): the router and the embedded NATS server;
	// nil otherwise.
	router *cluster.NATSRouter
	nats   *cluster.Server
	// The metrics endpoint; nil when Config.Metrics is empty.
	metricsLn   net.Listener
	metricsSrv  *http.Server
	metricsDone chan struct{} // closed when metricsSrv.Serve returns
	// Created lists what Start created on this first start (certificates,
	// the demo application), for the operator.
	Created []string

	serveErr chan error

	// The admin socket (admin.go); nil if it could not be opened.
	adminLn   net.Listener
	adminDone chan struct{} // closed when serveAdmin returns

	// The push worker (push.go); nil without Config.PushWebhook.
	push *pusher

	// The poller of the application secrets; nil when AppsPoll < 0.
	pollStop chan struct{}
	pollDone chan struct{}
	reloadMu sync.Mutex // serializes reloadApps
}

// Start opens the data directory and starts serving. Stop it with Shutdown
// or Close. It is StartContext without a way to give up.
func Start(cfg Config) (*Daemon, error) {
	return StartContext(context.Background(), cfg)
}

// StartContext opens the data directory and starts serving. Stop it with
// Shutdown or Close. If ctx ends while the store is opening (a slow log
// replay), it gives up with ctx's error; see pebblestore.OpenContext.
//
// Every file and directory Start creates in the data directory is
// readable by its owner only, and it tightens any that are not (with a
// warning). A start that fails returns an error that says what failed in
// one line, and has closed what it had opened.
func StartContext(ctx context.Context, cfg Config) (*Daemon, error) {
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:4433"
	}
	if cfg.DataDir == "" {
		cfg.DataDir = "data"
	}
	if cfg.AppsPoll == 0 {
		cfg.AppsPoll = 2 * time.Second
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	d := &Daemon{cfg: cfg, logger: logger, serveErr: make(chan error, 1)}
	if err := d.start(ctx); err != nil {
		d.closeParts()
		return nil, err
	}
	return d, nil
}

// start does the work of StartContext; on error, the caller closes what
// it opened.
func (d *Daemon) start(ctx context.Context) error {
	cfg, logger := d.cfg, d.logger
	if err := prepareDataDir(cfg.DataDir, logger); err != nil {
		return err
	}
	certFile, keyFile := cfg.CertFile, cfg.KeyFile
	if certFile == "" && keyFile == "" {
		var created bool
		var err error
		certFile, keyFile, created, err = certs.EnsureServer(CertsDir(cfg.DataDir), cfg.Hosts)
		if err != nil {
			return fmt.Errorf("daemon: certificates: %w", err)
		}
		if created {
			// The certificates are public, but nothing in the data
			// directory is for other users.
			tighten(CertsDir(cfg.DataDir))
			d.Created = append(d.Created, "development CA and server certificate in "+CertsDir(cfg.DataDir)+" (clients use --ca "+filepath.Join(CertsDir(cfg.DataDir), certs.CACertFile)+")")
		}
	} else if certFile == "" || keyFile == "" {
		return errors.New("daemon: set both the certificate and the key")
	}
	tlsConf, err := certs.LoadServerTLS(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	keys, err := loadServerKeys(cfg.DataDir, cfg.ServerID)
	if err != nil {
		return err
	}
	connIDs, err := connIDGenerator(keys, cfg.ServerID)
	if err != nil {
		return err
	}
	tlsConf.SetSessionTicketKeys([][32]byte{keys.ticket})

	if d.store = cfg.Store; d.store == nil {
		if err := d.openStore(ctx); err != nil {
			return err
		}
	}
	router := cfg.Router
	if cfg.NATS != "" || cfg.NATSEmbed {
		if err := d.joinCluster(); err != nil {
			return err
		}
		router = d.router
	}
	var createdApps []string
	if d.apps, createdApps, err = LoadKeyRing(cfg.DataDir); err != nil {
		return err
	}
	d.Created = append(d.Created, createdApps...)

	var m *metrics.Metrics
	if cfg.Metrics != "" {
		m = metrics.New()
		if d.metricsLn, err = net.Listen("tcp", cfg.Metrics); err != nil {
			return fmt.Errorf("daemon: metrics: %w", err)
		}
	}
	pushDelay, err := d.startPush(m)
	if err != nil {
		return err
	}
	d.hub, err = core.NewHub(core.Config{
		Store:            d.store,
		Router:           router,
		Apps:             d.apps,
		Logger:           logger,
		MaxFrame:         cfg.MaxFrame,
		SendRate:         cfg.SendRate,
		SendBurst:        cfg.SendBurst,
		MaxGroupMembers:  cfg.MaxGroupMembers,
		InvitesPerHour:   cfg.InvitesPerHour,
		TotalMemory:      cfg.TotalMemory,
		GroupCacheBytes:  cfg.GroupCacheBytes,
		DedupWindow:      cfg.DedupWindow,
		Metrics:          m,
		PushDelay:        pushDelay,
		HideReadReceipts: cfg.NoReadReceipts,
		PresenceGrace:    cfg.PresenceGrace,
		PresenceGroups:   cfg.PresenceGroups,
		PresenceCoalesce: cfg.PresenceCoalesce,
	})
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	if d.devices, err = session.NewDevices(session.Config{Hub: d.hub, DeviceMemory: cfg.DeviceMemory, CatchUpEvery: cfg.CatchUpEvery}); err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	if d.router != nil {
		m.WatchCluster(clusterStats(d.router, d.devices))
	}
	if err := d.listen(); err != nil {
		return err
	}
	if err := d.listenAdmin(); err != nil {
		logger.Warn("no admin socket: `qimd logout` will not reach this server", "path", AdminSocket(cfg.DataDir), "err", err)
	}
	if cfg.AppsPoll > 0 {
		d.pollStop, d.pollDone = make(chan struct{}), make(chan struct{})
		go d.pollApps(cfg.AppsPoll)
	}
	// The HTTP API: HTTPS on TCP from now on, HTTP/3 with d.srv.
	if err := d.openAPI(); err != nil {
		return err
	}
	h3 := d.startWeb(tlsConf)
	d.srv = &quicsrv.Server{TLSConfig: tlsConf, Devices: d.devices, Logger: logger, AuthTimeout: cfg.AuthTimeout, AuthBackoffMax: cfg.AuthBackoffMax, StatelessResetKey: &keys.reset, HandshakeRate: cfg.HandshakeRate, Metrics: m,
		MaxUnauthenticated: cfg.MaxUnauthenticated, MaxUnauthenticatedPerIP: cfg.MaxUnauthenticatedPerIP,
		ConnectionIDGenerator: connIDs, TokenKey: &keys.token, HTTP3: h3}
	go func() { d.serveErr <- d.srv.Serve(d.pc) }()
	if d.metricsLn != nil {
		d.serveMetrics(m)
	}
	return nil
}

// openStore opens the embedded Pebble store in the data directory as
// d.store, owned by the daemon.
func (d *Daemon) openStore(ctx context.Context) error {
	cfg := d.cfg
	storeDir := filepath.Join(cfg.DataDir, "store")
	if cfg.StoreFS == nil {
		if err := checkStoreSpace(storeDir); err != nil {
			return err
		}
	}
	st, err := pebblestore.OpenContext(ctx, storeDir, pebblestore.Options{Logger: d.logger, NoSync: cfg.NoSync, FS: cfg.StoreFS})
	if err != nil {
		return fmt.Errorf("daemon: open store: %w", err)
	}
	d.store, d.ownStore = st, true
	// Earlier versions copied the application secrets into the store.
	if n, err := st.DeleteAppRecords(ctx); err != nil {
		return fmt.Errorf("daemon: delete application secrets from the store: %w", err)
	} else if n > 0 {
		d.logger.Warn("deleted application secrets that an earlier version had copied into the store; the secret files are their only copy now", "apps", n)
	}
	return nil
}

// pollApps reloads the application secrets every interval until closeParts
// stops it. It runs in its own goroutine and closes d.pollDone.
func (d *Daemon) pollApps(interval time.Duration) {
	defer close(d.pollDone)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-d.pollStop:
			return
		case <-t.C:
			d.reloadApps()
		}
	}
}

// reloadApps reads the application secrets again and ends every session
// whose token no longer verifies (the application was removed or its
// secret rotated). It returns the changes and how many sessions it ended.
func (d *Daemon) reloadApps() ([]AppChange, int, error) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	changes, err := d.apps.Reload()
	if err != nil {
		d.logger.Error("reload application secrets; unreadable ones keep their previous secret", "err", err)
	}
	ended := 0
	for _, c := range changes {
		n := d.devices.Revalidate(c.Org, c.Appkey)
		ended += n
		d.logger.Info("application secret changed; ended the sessions whose token no longer verifies", "org", c.Org, "appkey", c.Appkey, "removed", c.Removed, "sessions", n)
	}
	return changes, ended, err
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
func (d *Daemon) Hub() *core.Hub { return d.hub }

// Devices returns the server's device layer, which runs its sessions.
func (d *Daemon) Devices() *session.Devices { return d.devices }

// Addr returns the address the server is serving on.
func (d *Daemon) Addr() net.Addr { return d.pc.LocalAddr() }

// Wait blocks until the server stops serving and returns why.
func (d *Daemon) Wait() error {
	err := <-d.serveErr
	d.serveErr <- err
	return err
}

// Shutdown stops accepting connections, tells connected devices the server
// is going away and HTTP clients to finish, waits for them (until ctx
// ends), then flushes and closes the embedded store (not a Config.Store).
func (d *Daemon) Shutdown(ctx context.Context) error {
	waitWeb := d.shutdownWeb(ctx)
	err := d.srv.Shutdown(ctx)
	if werr := waitWeb(); err == nil {
		err = werr
	}
	if cerr := d.closeParts(); err == nil {
		err = cerr
	}
	return err
}

// Close stops everything at once, then flushes and closes the embedded
// store (not a Config.Store).
func (d *Daemon) Close() error {
	d.srv.Close()
	return d.closeParts()
}

// closeParts closes what Start opened, in reverse order.
func (d *Daemon) closeParts() error {
	var errs []error
	if d.pollStop != nil {
		close(d.pollStop)
		<-d.pollDone
		d.pollStop = nil
	}
	if d.adminLn != nil {
		d.adminLn.Close()
		<-d.adminDone
		os.Remove(AdminSocket(d.cfg.DataDir))
		d.adminLn = nil
	}
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
	d.closeWeb()
	if d.pc != nil {
		errs = append(errs, d.pc.Close())
		if d.srv != nil {
			<-d.serveErr
		}
		d.pc = nil
	}
	if d.devices != nil {
		d.devices.Close()
	}
	d.stopPush()
	if d.hub != nil {
		errs = append(errs, d.hub.Close())
		d.hub = nil
	}
	errs = append(errs, d.closeBlobs())
	d.leaveCluster()
	if d.store != nil && d.ownStore {
		errs = append(errs, d.store.Close())
	}
	d.store = nil
	return errors.Join(errs...)
}

// CertsDir is where a data directory's generated certificates live.
func CertsDir(dataDir string) string { return filepath.Join(dataDir, "certs") }

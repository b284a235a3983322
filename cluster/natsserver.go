package cluster

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// ClusterName is the name of the NATS cluster that qim's servers form.
const ClusterName = "qim"

// ServerConfig configures an embedded NATS server (core NATS, no
// JetStream).
type ServerConfig struct {
	// Listen is the host:port clients connect to. Empty means
	// "127.0.0.1:4222"; port 0 picks a free port (see Server.ClientURL).
	Listen string
	// Name is the server's name in the cluster and in its logs. Empty
	// means a name nats-server generates.
	Name string
	// ClusterListen is the host:port the other servers of the cluster
	// connect to. Empty means none: the server is on its own (Routes are
	// then ignored). Port 0 picks a free port (see Server.ClusterURL).
	ClusterListen string
	// Routes are the cluster addresses (nats://host:port) of other
	// servers of the cluster, to connect to. A server needs only one of
	// them: they tell each other about the rest (gossip).
	Routes []string
	// Logger receives the server's logs (its debug logs when it is
	// enabled at slog.LevelDebug). Nil means none.
	Logger *slog.Logger
	// ReadyTimeout bounds how long StartServer waits for the server to
	// accept connections. Zero means 10 s.
	ReadyTimeout time.Duration
}

// DefaultListen is where an embedded NATS server listens by default.
const DefaultListen = "127.0.0.1:4222"

// Server is a running embedded NATS server.
type Server struct {
	ns *server.Server
}

// StartServer starts an embedded NATS server and waits until it accepts
// connections. Shutdown stops it.
func StartServer(cfg ServerConfig) (*Server, error) {
	host, port, err := hostPort(cmp.Or(cfg.Listen, DefaultListen))
	if err != nil {
		return nil, fmt.Errorf("cluster: nats listen address: %w", err)
	}
	opts := &server.Options{
		ServerName: cfg.Name,
		Host:       host,
		Port:       port,
		NoSigs:     true,
		JetStream:  false,
	}
	if cfg.ClusterListen != "" {
		chost, cport, err := hostPort(cfg.ClusterListen)
		if err != nil {
			return nil, fmt.Errorf("cluster: nats cluster address: %w", err)
		}
		opts.Cluster = server.ClusterOpts{Name: ClusterName, Host: chost, Port: cport}
		for _, r := range cfg.Routes {
			u, err := url.Parse(r)
			if err != nil || u.Host == "" {
				return nil, fmt.Errorf("cluster: nats route %q: not a nats://host:port URL", r)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("cluster: nats server: %w", err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	debug := logger.Enabled(context.Background(), slog.LevelDebug)
	ns.SetLoggerV2(natsLogger{logger.With("nats", cmp.Or(cfg.Name, ns.ID()))}, debug, false, false)
	ns.Start()
	if !ns.ReadyForConnections(cmp.Or(cfg.ReadyTimeout, 10*time.Second)) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("cluster: nats server not ready to accept connections on %s", net.JoinHostPort(host, strconv.Itoa(port)))
	}
	return &Server{ns: ns}, nil
}

// ClientURL returns the URL clients connect to, nats://host:port, with
// the port it listens on.
func (s *Server) ClientURL() string {
	if a, ok := s.ns.Addr().(*net.TCPAddr); ok {
		return "nats://" + net.JoinHostPort(a.IP.String(), strconv.Itoa(a.Port))
	}
	return s.ns.ClientURL()
}

// ClusterURL returns the URL other servers of the cluster connect to,
// nats://host:port, or "" if the server has no cluster listener.
func (s *Server) ClusterURL() string {
	a := s.ns.ClusterAddr()
	if a == nil {
		return ""
	}
	return "nats://" + net.JoinHostPort(a.IP.String(), strconv.Itoa(a.Port))
}

// Name returns the server's name.
func (s *Server) Name() string { return s.ns.Name() }

// NumPeers returns how many other servers of the cluster this server has
// routes to.
func (s *Server) NumPeers() int { return s.ns.NumRemotes() }

// NATS returns the nats-server itself, for monitoring (Varz, Subsz, ...).
func (s *Server) NATS() *server.Server { return s.ns }

// Shutdown stops the server, closing every connection, and waits until
// it has stopped.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

// hostPort splits addr into host and port; port 0 becomes nats-server's
// "any free port" (-1).
func hostPort(addr string) (string, int, error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port in %q", addr)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	return host, port, nil
}

// natsLogger adapts a *slog.Logger to nats-server's Logger.
type natsLogger struct{ l *slog.Logger }

func (n natsLogger) log(level slog.Level, format string, v []any) {
	ctx := context.Background()
	if n.l.Enabled(ctx, level) {
		n.l.Log(ctx, level, fmt.Sprintf(format, v...))
	}
}

// Noticef implements server.Logger.
func (n natsLogger) Noticef(format string, v ...any) { n.log(slog.LevelInfo, format, v) }

// Warnf implements server.Logger.
func (n natsLogger) Warnf(format string, v ...any) { n.log(slog.LevelWarn, format, v) }

// Fatalf implements server.Logger. An embedded server's fatal error is
// logged as an error: it is not this process's to end.
func (n natsLogger) Fatalf(format string, v ...any) { n.log(slog.LevelError, format, v) }

// Errorf implements server.Logger.
func (n natsLogger) Errorf(format string, v ...any) { n.log(slog.LevelError, format, v) }

// Debugf implements server.Logger.
func (n natsLogger) Debugf(format string, v ...any) { n.log(slog.LevelDebug, format, v) }

// Tracef implements server.Logger (trace is never enabled).
func (n natsLogger) Tracef(format string, v ...any) { n.log(slog.LevelDebug-4, format, v) }

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/qim-im/qim/auth"
	"github.com/qim-im/qim/certs"
	"github.com/qim-im/qim/daemon"
	"github.com/qim-im/qim/httpapi"
	"github.com/qim-im/qim/push"
)

// dataFlag is shared by every command.
var dataFlag = &cli.StringFlag{Name: "data", Value: "data", EnvVars: []string{"QIM_DATA"}, Usage: "data directory (store, certificates, application secrets)"}

func newApp(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:           "qimd",
		Usage:          "the qim QUIC instant-messaging server",
		Writer:         stdout,
		ErrWriter:      stderr,
		ExitErrHandler: func(*cli.Context, error) {},
		Commands: []*cli.Command{
			{
				Name:  "serve",
				Usage: "run the server",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "listen", Value: "127.0.0.1:4433", EnvVars: []string{"QIM_LISTEN"}, Usage: "UDP address to serve on (and TCP, with --http)"},
					&cli.BoolFlag{Name: "http", Value: true, EnvVars: []string{"QIM_HTTP"}, Usage: "serve the HTTP API on the --listen port too: HTTP/3 over UDP, and HTTPS (HTTP/1.1, HTTP/2) over TCP on the same address, which must be free (--http=false: qim over QUIC only)"},
					dataFlag,
					&cli.StringFlag{Name: "store", EnvVars: []string{"QIM_STORE"}, Usage: "store of record: a PostgreSQL `URL` (postgres://user@host:5432/db; a password is better given in PGPASSWORD), for several qimd nodes on one database; default: the embedded store in DATA/store"},
					&cli.StringFlag{Name: "blobs", EnvVars: []string{"QIM_BLOBS"}, Usage: "where uploads go: an S3-compatible bucket, s3://HOST[:PORT]/BUCKET[/PREFIX] (s3+http:// for plain HTTP; credentials in QIM_S3_ACCESS_KEY and QIM_S3_SECRET_KEY), shared by the nodes of a cluster; default: DATA/blobs"},
					&cli.Int64Flag{Name: "max-upload", Value: 10 << 20, EnvVars: []string{"QIM_MAX_UPLOAD"}, Usage: "largest upload (a picture for an IMAGE message) the HTTP API accepts, in bytes"},
					&cli.Int64Flag{Name: "upload-quota", Value: 200 << 20, EnvVars: []string{"QIM_UPLOAD_QUOTA"}, Usage: "bytes one user may upload per hour, on each node (negative: no quota)"},
					&cli.StringFlag{Name: "public-url", EnvVars: []string{"QIM_PUBLIC_URL"}, Usage: "scheme and host of the upload URLs the HTTP API hands out, e.g. https://chat.example.com (default: those of each upload request)"},
					&cli.StringFlag{Name: "cert", EnvVars: []string{"QIM_CERT"}, Usage: "certificate file (default: generated in DATA/certs)"},
					&cli.StringFlag{Name: "key", EnvVars: []string{"QIM_KEY"}, Usage: "key file for --cert"},
					&cli.StringSliceFlag{Name: "hosts", EnvVars: []string{"QIM_HOSTS"}, Usage: "extra names and addresses for a generated certificate"},
					&cli.IntFlag{Name: "max-frame", Value: 64 << 10, EnvVars: []string{"QIM_MAX_FRAME"}, Usage: "largest frame accepted, in bytes"},
					&cli.Float64Flag{Name: "send-rate", Value: 1000, EnvVars: []string{"QIM_SEND_RATE"}, Usage: "requests per second one user may make (negative: no limit)"},
					&cli.IntFlag{Name: "send-burst", Value: 2000, EnvVars: []string{"QIM_SEND_BURST"}, Usage: "burst of requests one user may make above --send-rate"},
					&cli.IntFlag{Name: "max-group", Value: 10000, EnvVars: []string{"QIM_MAX_GROUP"}, Usage: "largest number of members of a group"},
					&cli.IntFlag{Name: "invites-per-hour", Value: 50, EnvVars: []string{"QIM_INVITES_PER_HOUR"}, Usage: "groups a user may be added to per hour by invitations from users not in their contacts (negative: no limit)"},
					&cli.Int64Flag{Name: "device-memory", Value: 1 << 20, EnvVars: []string{"QIM_DEVICE_MEMORY"}, Usage: "bytes the server may buffer for one device (messages waiting for it, frames queued for its streams)"},
					&cli.Int64Flag{Name: "total-memory", Value: 256 << 20, EnvVars: []string{"QIM_TOTAL_MEMORY"}, Usage: "bytes the server may buffer for all devices together"},
					&cli.Int64Flag{Name: "cache-memory", Value: 64 << 20, EnvVars: []string{"QIM_CACHE_MEMORY"}, Usage: "bytes the cache of recent group messages may hold"},
					&cli.DurationFlag{Name: "dedup-window", Value: 7 * 24 * time.Hour, EnvVars: []string{"QIM_DEDUP_WINDOW"}, Usage: "how long a message's client_msg_id is remembered: a retry within it is answered with the original message, a later one is stored again (negative: forever)"},
					&cli.DurationFlag{Name: "auth-timeout", Value: 5 * time.Second, EnvVars: []string{"QIM_AUTH_TIMEOUT"}, Usage: "how long a new connection has to send CONNECT"},
					&cli.DurationFlag{Name: "auth-backoff-max", Value: 3 * time.Second, EnvVars: []string{"QIM_AUTH_BACKOFF_MAX"}, Usage: "longest delay of a failed CONNECT from an IP address that keeps failing (negative: no delay)"},
					&cli.Float64Flag{Name: "handshake-rate", Value: 1000, EnvVars: []string{"QIM_HANDSHAKE_RATE"}, Usage: "new connections per second above which clients must validate their address (QUIC Retry)"},
					&cli.IntFlag{Name: "max-unauth", Value: 1000, EnvVars: []string{"QIM_MAX_UNAUTH"}, Usage: "connections that have not authenticated yet, in total, beyond which the server stops accepting (negative: no limit)"},
					&cli.IntFlag{Name: "max-unauth-per-ip", Value: 100, EnvVars: []string{"QIM_MAX_UNAUTH_PER_IP"}, Usage: "connections from one IP address that have not authenticated yet, beyond which a new one is closed with RATE_LIMITED (negative: no limit)"},
					&cli.StringFlag{Name: "metrics", EnvVars: []string{"QIM_METRICS"}, Usage: "serve /metrics (Prometheus) and /debug/pprof over HTTP on TCP `ADDR`, e.g. 127.0.0.1:9090 (default: off); do not expose it publicly, profiles reveal the server's internals"},
					&cli.IntFlag{Name: "server-id", EnvVars: []string{"QIM_SERVER_ID"}, Usage: "this node's `N` in a cluster, 1-65535, one per node (0: a single node): its QUIC connection IDs carry N, encrypted, for a QUIC-aware load balancer (QUIC-LB), and its stateless reset key is its own. The nodes share copies of DATA/keys/server.key, DATA/certs and DATA/apps"},
					&cli.StringFlag{Name: "nats", EnvVars: []string{"QIM_NATS"}, Usage: "join a cluster through an external NATS cluster: its `URL`s, comma-separated (nats://host:4222,...); needs --store postgres://... and --server-id (see docs/CLUSTER.md)"},
					&cli.BoolFlag{Name: "nats-embed", EnvVars: []string{"QIM_NATS_EMBED"}, Usage: "join a cluster through a NATS server run inside this qimd (with --nats-cluster and --nats-routes, every qimd a member of one NATS cluster, no other process); needs --store postgres://... and --server-id"},
					&cli.StringFlag{Name: "nats-cluster", EnvVars: []string{"QIM_NATS_CLUSTER"}, Usage: "with --nats-embed: the `HOST:PORT` (TCP) the other qimd nodes' NATS servers connect to"},
					&cli.StringFlag{Name: "nats-routes", EnvVars: []string{"QIM_NATS_ROUTES"}, Usage: "with --nats-embed: the other nodes' --nats-cluster addresses, as `URL`s nats://HOST:PORT, comma-separated (one is enough: they tell each other the rest)"},
					&cli.StringFlag{Name: "nats-listen", EnvVars: []string{"QIM_NATS_LISTEN"}, Usage: "with --nats-embed: the `HOST:PORT` (TCP) of its client port (default: 127.0.0.1, a free port; only this qimd needs it)"},
					&cli.DurationFlag{Name: "catch-up-every", Value: 30 * time.Second, EnvVars: []string{"QIM_CATCH_UP_EVERY"}, Usage: "in a cluster: how often every session re-reads its inbox for messages whose live events NATS lost unnoticed (the bound on their delay)"},
					&cli.StringFlag{Name: "push-webhook", EnvVars: []string{"QIM_PUSH_WEBHOOK"}, Usage: "POST a signed JSON notification to this `URL`, the application's push gateway (to APNs or FCM), for every stored message that a recipient has not received on any device within --push-delay (default: off; see docs/PUSH.md)"},
					&cli.StringFlag{Name: "push-secret-file", EnvVars: []string{"QIM_PUSH_SECRET_FILE"}, Usage: "`FILE` holding the secret that signs push notifications (default: DATA/keys/push.secret, created on first start; every node of a cluster needs a copy)"},
					&cli.BoolFlag{Name: "push-no-preview", EnvVars: []string{"QIM_PUSH_NO_PREVIEW"}, Usage: "leave the beginning of the message out of push notifications"},
					&cli.BoolFlag{Name: "read-receipts", Value: true, EnvVars: []string{"QIM_READ_RECEIPTS"}, Usage: "tell users how far the others read (false: read cursors stay private, for every user; docs/PROTOCOL.md 11.4)"},
					&cli.DurationFlag{Name: "presence-grace", Value: 5 * time.Second, EnvVars: []string{"QIM_PRESENCE_GRACE"}, Usage: "how long a user whose last connection ended still shows online, so that a reconnect shows no offline blip (docs/PROTOCOL.md 11.6)"},
					&cli.BoolFlag{Name: "presence-groups", EnvVars: []string{"QIM_PRESENCE_GROUPS"}, Usage: "show presence between the members of groups of at most 500 members too, not only between mutual contacts"},
					&cli.DurationFlag{Name: "push-delay", Value: daemon.DefaultPushDelay, EnvVars: []string{"QIM_PUSH_DELAY"}, Usage: "how long a recipient's devices have to receive a message before the push gateway is told to wake them"},
					&cli.DurationFlag{Name: "presence-coalesce", EnvVars: []string{"QIM_PRESENCE_COALESCE"}, Hidden: true, Usage: "the least time between two presence changes of a user that its contacts are told (default 1s; shorter for benchmarks of the fan-out)"},
					&cli.DurationFlag{Name: "push-lease", EnvVars: []string{"QIM_PUSH_LEASE"}, Hidden: true, Usage: "how long a push job a node claimed stays its own before another start or node may send it (default 1m; shorter for crash tests)"},
					&cli.DurationFlag{Name: "shutdown-timeout", Value: 10 * time.Second, EnvVars: []string{"QIM_SHUTDOWN_TIMEOUT"}, Usage: "how long SIGTERM waits for devices to go"},
					&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"QIM_LOG_LEVEL"}, Usage: "debug, info, warn or error"},
				},
				Action: serve,
			},
			{
				Name:  "certs",
				Usage: "write a development CA and server certificate into DATA/certs",
				Flags: []cli.Flag{
					dataFlag,
					&cli.StringSliceFlag{Name: "hosts", EnvVars: []string{"QIM_HOSTS"}, Usage: "extra names and addresses for the certificate"},
				},
				Action: func(c *cli.Context) error {
					dir := daemon.CertsDir(c.String("data"))
					if err := certs.Generate(dir, c.StringSlice("hosts")); err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "wrote %s (give clients --ca %s)\n", dir, filepath.Join(dir, certs.CACertFile))
					return nil
				},
			},
			{
				Name:  "quiclb",
				Usage: "print the QUIC-LB configuration of the cluster whose nodes share DATA/keys/server.key, for a QUIC-aware load balancer (the key is a secret)",
				Flags: []cli.Flag{dataFlag},
				Action: func(c *cli.Context) error {
					lb, err := daemon.QUICLB(c.String("data"))
					if err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "config_id=%d server_id_len=%d nonce_len=%d cid_len=%d key=%x\n", lb.ConfigID, lb.ServerIDLen, lb.NonceLen, lb.CIDLen(), lb.Key)
					return nil
				},
			},
			{
				Name:  "token",
				Usage: "print a token for a user of an application",
				Flags: []cli.Flag{
					dataFlag,
					&cli.StringFlag{Name: "org", Value: daemon.DemoOrg, EnvVars: []string{"QIM_ORG"}},
					&cli.StringFlag{Name: "appkey", Value: daemon.DemoAppkey, EnvVars: []string{"QIM_APPKEY"}},
					&cli.StringFlag{Name: "user", Required: true, EnvVars: []string{"QIM_USER"}},
					&cli.DurationFlag{Name: "ttl", Value: 24 * time.Hour, EnvVars: []string{"QIM_TTL"}, Usage: "how long the token is valid"},
				},
				Action: func(c *cli.Context) error {
					if !auth.ValidID(c.String("user")) {
						return errors.New("user must be 1-64 characters of A-Z a-z 0-9 . _ @ -")
					}
					if err := ensureDemoApp(c); err != nil {
						return err
					}
					secret, err := daemon.AppSecret(c.String("data"), c.String("org"), c.String("appkey"))
					if err != nil {
						return err
					}
					fmt.Fprintln(c.App.Writer, auth.Mint(secret, c.String("org"), c.String("appkey"), c.String("user"), time.Now().Add(c.Duration("ttl"))))
					return nil
				},
			},
			{
				Name:  "apikey",
				Usage: "print the API key of an application, for its backend's HTTP API requests (Authorization: Bearer KEY; signed requests are safer, see docs/HTTP.md)",
				Flags: []cli.Flag{
					dataFlag,
					&cli.StringFlag{Name: "org", Value: daemon.DemoOrg, EnvVars: []string{"QIM_ORG"}},
					&cli.StringFlag{Name: "appkey", Value: daemon.DemoAppkey, EnvVars: []string{"QIM_APPKEY"}},
				},
				Action: func(c *cli.Context) error {
					if err := ensureDemoApp(c); err != nil {
						return err
					}
					secret, err := daemon.AppSecret(c.String("data"), c.String("org"), c.String("appkey"))
					if err != nil {
						return err
					}
					fmt.Fprintln(c.App.Writer, httpapi.APIKey(secret))
					return nil
				},
			},
			{
				Name:  "app",
				Usage: "manage applications",
				Subcommands: []*cli.Command{{
					Name:  "create",
					Usage: "create an application with a random secret (a running server loads it within 2 s)",
					Flags: []cli.Flag{
						dataFlag,
						&cli.StringFlag{Name: "org", Required: true},
						&cli.StringFlag{Name: "appkey", Required: true},
					},
					Action: func(c *cli.Context) error {
						if c.String("org") != daemon.DemoOrg || c.String("appkey") != daemon.DemoAppkey {
							if err := ensureDemoApp(c); err != nil {
								return err
							}
						}
						secret, err := daemon.CreateApp(c.String("data"), c.String("org"), c.String("appkey"))
						if err != nil {
							return err
						}
						fmt.Fprintf(c.App.Writer, "%x\n", secret)
						return tellServer(c, "created "+c.String("org")+"/"+c.String("appkey"))
					},
				}, {
					Name:  "remove",
					Usage: "delete an application's secret: its tokens stop working and a running server ends its sessions (UNAUTHENTICATED)",
					Flags: appFlags(),
					Action: func(c *cli.Context) error {
						if err := daemon.RemoveApp(c.String("data"), c.String("org"), c.String("appkey")); err != nil {
							return err
						}
						return tellServer(c, "removed "+c.String("org")+"/"+c.String("appkey"))
					},
				}, {
					Name:  "rotate",
					Usage: "give an application a new random secret (printed): tokens signed with the old one stop working and a running server ends their sessions (UNAUTHENTICATED)",
					Flags: appFlags(),
					Action: func(c *cli.Context) error {
						secret, err := daemon.RotateApp(c.String("data"), c.String("org"), c.String("appkey"))
						if err != nil {
							return err
						}
						fmt.Fprintf(c.App.Writer, "%x\n", secret)
						return tellServer(c, "rotated "+c.String("org")+"/"+c.String("appkey"))
					},
				}},
			},
			{
				Name:  "logout",
				Usage: "end every session of a user on the running server, and on every node of its cluster (DISCONNECT UNAUTHENTICATED; the count is this node's); the user's devices need a new token to connect again, but tokens already minted stay valid until they expire",
				Flags: append(appFlags(), &cli.StringFlag{Name: "user", Required: true, EnvVars: []string{"QIM_USER"}}),
				Action: func(c *cli.Context) error {
					resp, err := daemon.Admin(c.Context, c.String("data"), daemon.AdminRequest{Op: "end-sessions", Org: c.String("org"), Appkey: c.String("appkey"), User: c.String("user")})
					if err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "ended %d session(s)\n", resp.Ended)
					return nil
				},
			},
		},
	}
}

func serve(c *cli.Context) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(c.App.ErrWriter, &slog.HandlerOptions{Level: level}))
	cfg := daemon.Config{
		Listen:   c.String("listen"),
		DataDir:  c.String("data"),
		CertFile: c.String("cert"),
		KeyFile:  c.String("key"),
		Hosts:    c.StringSlice("hosts"),
		MaxFrame: c.Int("max-frame"),
		Logger:   logger,

		SendRate:         c.Float64("send-rate"),
		SendBurst:        c.Int("send-burst"),
		MaxGroupMembers:  c.Int("max-group"),
		InvitesPerHour:   c.Int("invites-per-hour"),
		DeviceMemory:     c.Int64("device-memory"),
		TotalMemory:      c.Int64("total-memory"),
		GroupCacheBytes:  c.Int64("cache-memory"),
		DedupWindow:      c.Duration("dedup-window"),
		HandshakeRate:    c.Float64("handshake-rate"),
		AuthTimeout:      c.Duration("auth-timeout"),
		AuthBackoffMax:   c.Duration("auth-backoff-max"),
		Metrics:          c.String("metrics"),
		NoHTTP:           !c.Bool("http"),
		MaxUpload:        c.Int64("max-upload"),
		UploadQuota:      c.Int64("upload-quota"),
		PublicURL:        c.String("public-url"),
		ServerID:         c.Int("server-id"),
		NATS:             c.String("nats"),
		NATSEmbed:        c.Bool("nats-embed"),
		NATSListen:       c.String("nats-listen"),
		NATSCluster:      c.String("nats-cluster"),
		NATSRoutes:       splitList(c.String("nats-routes")),
		CatchUpEvery:     c.Duration("catch-up-every"),
		PushWebhook:      c.String("push-webhook"),
		PushSecretFile:   c.String("push-secret-file"),
		PushNoPreview:    c.Bool("push-no-preview"),
		PushDelay:        c.Duration("push-delay"),
		PushWorker:       push.Config{Lease: c.Duration("push-lease")},
		NoReadReceipts:   !c.Bool("read-receipts"),
		PresenceGrace:    c.Duration("presence-grace"),
		PresenceGroups:   c.Bool("presence-groups"),
		PresenceCoalesce: c.Duration("presence-coalesce"),

		MaxUnauthenticated:      c.Int("max-unauth"),
		MaxUnauthenticatedPerIP: c.Int("max-unauth-per-ip"),
	}
	if err := daemon.CheckCluster(cfg, c.String("store") != ""); err != nil {
		return err // before the store is opened: one line
	}
	st, err := openStore(c.Context, c.String("store"), logger)
	if err != nil {
		return err
	}
	if st != nil {
		// The daemon does not close a store it was given.
		defer st.Close()
	}
	cfg.Store = st
	blobs, err := openBlobs(c.Context, c.String("blobs"), logger)
	if err != nil {
		return err
	}
	if blobs != nil {
		defer blobs.Close()
	}
	cfg.Blobs = blobs
	d, err := daemon.StartContext(c.Context, cfg)
	if err != nil {
		return err
	}
	for _, what := range d.Created {
		logger.Info("created " + what)
	}
	fmt.Fprintf(c.App.ErrWriter, "qimd: serving on %s; data in %s\nqimd: mint a token with: qimd token --data %s --user alice\n",
		d.Addr(), c.String("data"), c.String("data"))
	if addr := d.HTTPAddr(); addr != nil {
		fmt.Fprintf(c.App.ErrWriter, "qimd: HTTP API on https://%s/ (HTTP/1.1, HTTP/2 over TCP; HTTP/3 over UDP)\n", addr)
	}
	if addr := d.MetricsAddr(); addr != nil {
		fmt.Fprintf(c.App.ErrWriter, "qimd: metrics on http://%s/metrics, profiles on http://%s/debug/pprof/\n", addr, addr)
	}

	select {
	case <-c.Context.Done():
	case err := <-waitErr(d):
		d.Close()
		return err
	}
	logger.Info("shutting down")
	ctx, cancel := context.WithTimeout(context.Background(), c.Duration("shutdown-timeout"))
	defer cancel()
	if err := d.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// ensureDemoApp creates the demo application in a data directory that has
// no application yet, whichever command runs first there, and says so on
// stderr.
func ensureDemoApp(c *cli.Context) error {
	created, err := daemon.EnsureDemoApp(c.String("data"))
	if created {
		fmt.Fprintf(c.App.ErrWriter, "qimd: created the development application %s/%s in %s\n", daemon.DemoOrg, daemon.DemoAppkey, daemon.AppsDir(c.String("data")))
	}
	return err
}

func waitErr(d *daemon.Daemon) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- d.Wait() }()
	return ch
}

// appFlags are the flags of commands about one application.
func appFlags() []cli.Flag {
	return []cli.Flag{
		dataFlag,
		&cli.StringFlag{Name: "org", Value: daemon.DemoOrg, EnvVars: []string{"QIM_ORG"}},
		&cli.StringFlag{Name: "appkey", Value: daemon.DemoAppkey, EnvVars: []string{"QIM_APPKEY"}},
	}
}

// tellServer asks the server running on --data, if any, to reload the
// application secrets now (it would within 2 s anyway), and reports what
// it did.
func tellServer(c *cli.Context, done string) error {
	resp, err := daemon.Admin(c.Context, c.String("data"), daemon.AdminRequest{Op: "reload-apps"})
	switch {
	case errors.Is(err, daemon.ErrNotRunning):
		fmt.Fprintf(c.App.ErrWriter, "%s (no server running on %s)\n", done, c.String("data"))
		return nil
	case err != nil:
		return fmt.Errorf("%s, but the running server did not confirm: %w (it reloads the secrets within 2 s by itself)", done, err)
	}
	fmt.Fprintf(c.App.ErrWriter, "%s; the running server ended %d session(s)\n", done, resp.Ended)
	return nil
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

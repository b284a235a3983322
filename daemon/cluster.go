package daemon

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/qim-im/qim/cluster"
	"github.com/qim-im/qim/metrics"
	"github.com/qim-im/qim/session"
)

// joinCluster starts the embedded NATS server if asked, and connects the
// node's router to NATS, as d.router. The node's name, in NATS and in its
// logs, is "qim-" and its server id.
func (d *Daemon) joinCluster() error {
	cfg := d.cfg
	if err := CheckCluster(cfg, cfg.Store != nil); err != nil {
		return err
	}
	name := "qim-" + strconv.Itoa(cfg.ServerID)
	var urls []string
	if cfg.NATSEmbed {
		listen := cfg.NATSListen
		if listen == "" {
			listen = "127.0.0.1:0"
		}
		var err error
		d.nats, err = cluster.StartServer(cluster.ServerConfig{
			Listen:        listen,
			Name:          name,
			ClusterListen: cfg.NATSCluster,
			Routes:        cfg.NATSRoutes,
			Logger:        d.logger.With("nats", "server"),
		})
		if err != nil {
			return fmt.Errorf("daemon: embedded NATS server: %w", err)
		}
		urls = append(urls, d.nats.ClientURL())
	}
	if cfg.NATS != "" {
		urls = append(urls, strings.Split(cfg.NATS, ",")...)
	}
	var err error
	d.router, err = cluster.NewNATSRouter(cluster.RouterConfig{
		URL:    strings.Join(urls, ","),
		Name:   name,
		Logger: d.logger.With("nats", "router"),
	})
	if err != nil {
		return fmt.Errorf("daemon: connect to NATS: %w", err)
	}
	return nil
}

// CheckCluster checks the cluster part of cfg, with sharedStore saying
// whether the node has a store that other nodes can share (Config.Store,
// or a PostgreSQL URL not opened yet): a node of a cluster (NATS or
// NATSEmbed set) needs one, no Router of its own and a server id; the
// embedded NATS server's options need NATSEmbed.
func CheckCluster(cfg Config, sharedStore bool) error {
	switch {
	case !cfg.NATSEmbed && (cfg.NATSCluster != "" || len(cfg.NATSRoutes) > 0 || cfg.NATSListen != ""):
		return errors.New("daemon: --nats-cluster, --nats-routes and --nats-listen configure the embedded NATS server: add --nats-embed")
	case cfg.NATS == "" && !cfg.NATSEmbed:
		return nil // not a cluster
	case !sharedStore:
		return errors.New("daemon: a cluster needs a store every node shares (qimd serve --store postgres://...), not the embedded one")
	case cfg.Router != nil:
		return errors.New("daemon: a cluster has its own router: set NATS or Router, not both")
	case cfg.ServerID == 0:
		return errors.New("daemon: every node of a cluster needs its own server id (qimd serve --server-id N, 1 to 65535)")
	}
	return nil
}

// leaveCluster closes the router and stops the embedded NATS server, if
// any.
func (d *Daemon) leaveCluster() {
	if d.router != nil {
		d.router.Close()
		d.router = nil
	}
	if d.nats != nil {
		d.nats.Shutdown()
		d.nats = nil
	}
}

// Router returns the node's cluster router, or nil outside a cluster.
func (d *Daemon) Router() *cluster.NATSRouter { return d.router }

// NATSServer returns the node's embedded NATS server, or nil if it has
// none.
func (d *Daemon) NATSServer() *cluster.Server { return d.nats }

// clusterStats returns what reads a node's cluster counters, for the
// metrics.
func clusterStats(r *cluster.NATSRouter, dev *session.Devices) func() metrics.ClusterStats {
	return func() metrics.ClusterStats {
		rs := r.Stats()
		return metrics.ClusterStats{Published: rs.Published, Received: rs.Received, DroppedOut: rs.DroppedOut, DroppedIn: rs.DroppedIn,
			MissedCalls: rs.MissedCalls, Reconnects: rs.Reconnects, Subscriptions: rs.Subscriptions, CatchUpPasses: dev.CatchUpPasses()}
	}
}

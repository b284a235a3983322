package testserver

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/core"
	"github.com/qim-im/qim/daemon"
	"github.com/qim-im/qim/store"
	"github.com/qim-im/qim/store/pgstore"
)

// Cluster is several servers in the test process that share one store and
// one router: the nodes of a cluster, as qimd processes on one PostgreSQL
// database are.
type Cluster struct {
	// Nodes are the servers, each on its own address and data directory.
	Nodes []*Server
	// Store is what every node serves from; Router is their shared router
	// when StartCluster was given one (nil: each node has its NATS router).
	Store  store.Store
	Router core.Router
}

// StartCluster starts n servers on one store, and stops them when the test
// ends. The store is opts.Store or else, required then, the database at
// opts.Postgres, opened once for every node and closed after them. The
// nodes are a cluster (server ids 1 to n): unless opts.Router, opts.NATS
// or opts.NATSNodes is set, each runs an embedded NATS server, the servers
// clustered over loopback (every node routes to the first), as `qimd serve
// --nats-embed` does. With opts.NATS or opts.NATSNodes, they connect to
// that NATS instead; with
// opts.Router, they share that router (a *core.LocalRouter stands in for
// a cluster's router in one process). The first node's data directory is
// opts.DataDir or a new one; each other node gets its own, with a copy of
// the first's certificates, server key and application secrets.
func StartCluster(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	c := &Cluster{Store: opts.Store, Router: opts.Router}
	if c.Store == nil {
		if opts.Postgres == "" {
			t.Fatal("testserver: StartCluster needs Options.Store or Options.Postgres")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		st, err := pgstore.Open(ctx, opts.Postgres, pgstore.Options{})
		cancel()
		if err != nil {
			t.Fatalf("testserver: %v", err)
		}
		t.Cleanup(func() { st.Close() }) // after the nodes' Stop: cleanups run last first
		c.Store = st
	}
	opts.Store, opts.Postgres = c.Store, ""
	embed := opts.Router == nil && opts.NATS == "" && len(opts.NATSNodes) == 0
	if embed {
		opts.NATSEmbed, opts.NATSCluster = true, "127.0.0.1:0"
	}
	for i := range n {
		o := opts
		if opts.Router == nil {
			o.ServerID = i + 1
		}
		if k := len(opts.NATSNodes); k > 0 {
			o.NATS = opts.NATSNodes[i%k]
		}
		if i > 0 {
			o.DataDir = t.TempDir()
			first := c.Nodes[0]
			if err := daemon.CopyShared(first.DataDir, o.DataDir); err != nil {
				t.Fatalf("testserver: %v", err)
			}
			if embed {
				o.NATSRoutes = []string{first.d.NATSServer().ClusterURL()}
			}
		}
		node := Start(t, o)
		if embed {
			// A restarted node keeps its cluster address, which the
			// others route to.
			u, err := url.Parse(node.d.NATSServer().ClusterURL())
			if err != nil {
				t.Fatalf("testserver: %v", err)
			}
			node.opts.NATSCluster = u.Host
		}
		c.Nodes = append(c.Nodes, node)
	}
	if embed {
		c.waitRoutes(t)
	}
	return c
}

// waitRoutes waits until every node's NATS server has routes to all the
// others.
func (c *Cluster) waitRoutes(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for _, s := range c.Nodes {
		for s.d.NATSServer().NumPeers() < len(c.Nodes)-1 {
			if time.Now().After(deadline) {
				t.Fatalf("testserver: the NATS servers did not form a cluster of %d", len(c.Nodes))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// Addrs returns the nodes' addresses, in order.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, s := range c.Nodes {
		addrs[i] = s.Addr
	}
	return addrs
}

// ClientConfig returns the client configuration of user's device on the
// demo application, with every node: the first as Config.Addr, the others
// as Config.Addrs.
func (c *Cluster) ClientConfig(user, device string) client.Config {
	cfg := c.Nodes[0].ClientConfig(user, device)
	cfg.Addrs = c.Addrs()[1:]
	return cfg
}

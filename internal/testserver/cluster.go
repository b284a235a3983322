package testserver

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/core"
	"github.com/qim-im/qim/store"
	"github.com/qim-im/qim/store/pgstore"
)

// Cluster is several servers in the test process that share one store and
// one router: the nodes of a cluster, as qimd processes on one PostgreSQL
// database are.
type Cluster struct {
	// Nodes are the servers, each on its own address and data directory.
	Nodes []*Server
	// Store and Router are what every node serves from.
	Store  store.Store
	Router core.Router
}

// sharedDirs are what the nodes of a cluster share of their data
// directories: the CA and server certificate, the key of session tickets
// and stateless resets, and the application secrets.
var sharedDirs = []string{"certs", "keys", "apps"}

// StartCluster starts n servers on one store and one router, and stops
// them when the test ends. The store is opts.Store or else, required then,
// the database at opts.Postgres, opened once for every node and closed
// after them. The router is opts.Router, or else one core.LocalRouter,
// which stands in for a cluster's router: an event of any node reaches
// the sessions of every node. The first node's data directory is
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
	if c.Router == nil {
		c.Router = &core.LocalRouter{}
	}
	opts.Store, opts.Router, opts.Postgres = c.Store, c.Router, ""
	first := Start(t, opts)
	c.Nodes = append(c.Nodes, first)
	for range n - 1 {
		o := opts
		o.DataDir = t.TempDir()
		for _, dir := range sharedDirs {
			if err := copyDir(filepath.Join(first.DataDir, dir), filepath.Join(o.DataDir, dir)); err != nil {
				t.Fatalf("testserver: copy the first node's %s: %v", dir, err)
			}
		}
		c.Nodes = append(c.Nodes, Start(t, o))
	}
	return c
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

// copyDir copies the directory tree src to dst, keeping permissions.
func copyDir(src, dst string) error {
	return filepath.WalkDir(src, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := e.Info()
		if err != nil {
			return err
		}
		if e.IsDir() {
			return os.MkdirAll(target, info.Mode().Perm())
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, info.Mode().Perm())
	})
}

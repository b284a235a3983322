package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// StartLocalCluster starts n embedded NATS servers clustered over
// loopback, on free ports, named qim-1 to qim-n, and waits (up to
// timeout) until each has a route to every other. It is for tests and
// benchmarks: the first server's cluster port is known only once it has
// started, so it starts first, the others are given it as their route,
// and they learn about each other from it (gossip). On error it stops
// the servers it started.
func StartLocalCluster(n int, logger *slog.Logger, timeout time.Duration) ([]*Server, error) {
	if n < 1 {
		return nil, fmt.Errorf("cluster: a cluster of %d servers", n)
	}
	var servers []*Server
	fail := func(err error) ([]*Server, error) {
		for _, s := range servers {
			s.Shutdown()
		}
		return nil, err
	}
	for i := range n {
		cfg := ServerConfig{
			Listen:        "127.0.0.1:0",
			Name:          fmt.Sprintf("qim-%d", i+1),
			ClusterListen: "127.0.0.1:0",
			Logger:        logger,
		}
		if i > 0 {
			cfg.Routes = []string{servers[0].ClusterURL()}
		}
		s, err := StartServer(cfg)
		if err != nil {
			return fail(err)
		}
		servers = append(servers, s)
	}
	if err := WaitPeers(servers, timeout); err != nil {
		return fail(err)
	}
	return servers, nil
}

// ErrNoMesh is returned by WaitPeers when the servers did not all connect
// to each other in time.
var ErrNoMesh = errors.New("cluster: nats servers not fully connected")

// WaitPeers waits, up to timeout, until each of servers has a route to
// every other one, polling every 10 ms.
func WaitPeers(servers []*Server, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		missing := ""
		for _, s := range servers {
			if got := s.NumPeers(); got != len(servers)-1 {
				missing = fmt.Sprintf("%s has %d peers of %d", s.Name(), got, len(servers)-1)
				break
			}
		}
		if missing == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %s", ErrNoMesh, missing)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/daemon"
)

// qimdCluster is qimd nodes that the suite runs as one cluster: processes
// of their own on one PostgreSQL database, each a member of one NATS
// cluster embedded in them (qimd serve --nats-embed).
type qimdCluster struct {
	nodes []*Env // node i+1's (--server-id i+1)
	procs []proc // the nodes' processes, in the same order
}

// startCluster runs n qimd nodes named name-1 ... name-n (their logs are
// name-N.log) as one cluster on the database dbURL, each with the flags of
// startQimd, and waits until a message sent on any node reaches a device on
// every other. The nodes share copies of the first's certificates, server
// key and application secrets, as a cluster's nodes must. On error it
// kills what it started.
func (s *suite) startCluster(ctx context.Context, name string, n int, dbURL string) (*qimdCluster, error) {
	// Each node's NATS cluster port, known before any starts: each node
	// routes to every other.
	natsAddrs := make([]string, n)
	for i := range natsAddrs {
		natsAddrs[i] = freeTCP()
	}
	c := &qimdCluster{}
	var first string
	for i := range n {
		node := fmt.Sprintf("%s-%d", name, i+1)
		data := filepath.Join(s.o.Dir, node)
		if i == 0 {
			first = data
		} else if err := daemon.CopyShared(first, data); err != nil {
			c.kill()
			return nil, fmt.Errorf("bench: %s: %w", node, err)
		}
		var routes []string
		for j, a := range natsAddrs {
			if j != i {
				routes = append(routes, "nats://"+a)
			}
		}
		env, p, err := s.startQimd(ctx, node, data, freeUDP(), freeTCP(), "--store", dbURL,
			"--server-id", strconv.Itoa(i+1), "--nats-embed", "--nats-cluster", natsAddrs[i],
			"--nats-routes", strings.Join(routes, ","))
		if p.cmd != nil {
			c.procs = append(c.procs, p)
		}
		if err != nil {
			c.kill()
			return nil, err
		}
		c.nodes = append(c.nodes, env)
	}
	s.progressf("%s: %d nodes started, waiting for their NATS routes", name, n)
	start := time.Now()
	if err := c.waitRoutes(ctx, 30*time.Second); err != nil {
		c.kill()
		return nil, fmt.Errorf("bench: %s (see %s-N.log): %w", name, filepath.Join(s.o.Dir, name), err)
	}
	s.progressf("%s: every node reaches every other (%v)", name, time.Since(start).Round(time.Millisecond))
	return c, nil
}

// kill ends every node with SIGKILL and waits until they have exited.
func (c *qimdCluster) kill() {
	for _, p := range c.procs {
		p.cmd.Process.Kill()
	}
	for _, p := range c.procs {
		<-p.exited
	}
}

// waitRoutes waits, for at most timeout, until an ephemeral message sent on
// each node reaches a device on every other node: until the NATS cluster
// has formed and each node's server knows the subscriptions of the others.
// A message sent before then can be lost (core NATS); a stored one would
// come late, with the next catch-up.
func (c *qimdCluster) waitRoutes(ctx context.Context, timeout time.Duration) error {
	e := c.nodes[0]
	users := make([]string, len(c.nodes))
	for i := range users {
		users[i] = e.User("probe", i)
	}
	cs, err := dialAll(ctx, c.nodes, users, len(users), nil)
	if err != nil {
		return err
	}
	defer closeAll(cs)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	nonce := 0
	for i := range cs {
		for j := range cs {
			if i == j {
				continue
			}
			for {
				nonce++
				arrived, err := probe(ctx, cs[i], users[j], cs[j], nonce)
				if err != nil {
					return fmt.Errorf("probe from node %d to node %d: %w", i+1, j+1, err)
				}
				if arrived {
					break
				}
				if ctx.Err() != nil {
					return fmt.Errorf("node %d's messages do not reach node %d within %v", i+1, j+1, timeout)
				}
			}
		}
	}
	return nil
}

// probe sends an ephemeral message from c to user, whose device is rx, and
// reports whether rx received it within a second. An error means rx's
// session has ended.
func probe(ctx context.Context, c *client.Client, user string, rx *client.Client, nonce int) (bool, error) {
	text := "probe " + strconv.Itoa(nonce)
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := c.Send(ctx, client.ToUser(user), client.Outgoing{Text: text, NoOffline: true}); err != nil {
		// Wait out the attempt's second: do not spin on a refusing node.
		<-ctx.Done()
		return false, nil
	}
	for {
		select {
		case <-ctx.Done():
			return false, nil
		case m, ok := <-rx.Messages():
			if !ok {
				return false, fmt.Errorf("session ended: %w", rx.Err())
			}
			if client.Text(m) == text {
				return true, nil
			}
		}
	}
}

package bench

import (
	"cmp"
	"context"
	"fmt"
	"path/filepath"

	"github.com/qim-im/qim/internal/pgdb"
)

// clusterNodes is how many qimd nodes the cluster scenarios run.
const clusterNodes = 3

// clusterPair runs pair-durable over a cluster of three qimd nodes on a new
// database of o.Postgres (dropped after), each pair's sender on one node
// and its receiver on the next, so that every message crosses from one
// node to another. Its baseline is bare pgx committing batches of the
// size the nodes' committers made on average in the same run, run once the
// nodes are killed, with the cores to itself.
func (s *suite) clusterPair(ctx context.Context) error {
	if s.o.Postgres == "" {
		s.progressf("cluster-pair-durable: skipped (no --postgres)")
		return nil
	}
	o := s.o.Pair
	o.defaults()
	o.Offline = true
	dbURL, drop, err := pgdb.Create(ctx, s.o.Postgres, "qimbench_")
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	defer drop()
	c, err := s.startCluster(ctx, "cluster-pair", clusterNodes, dbURL)
	if err != nil {
		return err
	}
	defer c.kill()
	before := scrapeAll(ctx, c.nodes)
	dur, err := PairAcross(ctx, c.nodes, o)
	if err != nil {
		return err
	}
	after := scrapeAll(ctx, c.nodes)
	c.kill()
	batch := commitBatch(before, after)
	s.progressf("baseline: bare pgx, batches of %d messages (the nodes' average) over %d conversations", batch, o.Pairs)
	base, err := PGBaseline(ctx, PGOptions{URL: dbURL, Convs: o.Pairs, Batch: batch, Size: o.Size, Duration: o.Duration})
	if err != nil {
		return err
	}
	s.emit(Line{"cluster-pair-durable", dur.Rate(), "msgs/s", base.Rate()})
	s.emit(Line{"cluster-pair-durable-p99", ms(dur.Latency.P99), "ms", 0})
	return nil
}

// clusterFanout runs the fanout of one group (o.ClusterFanout members, the
// sender included) spread evenly over a cluster of three qimd nodes,
// against the same fanout on one qimd, both on PostgreSQL, each on a new
// database of o.Postgres, one after the other.
func (s *suite) clusterFanout(ctx context.Context) error {
	if s.o.Postgres == "" {
		s.progressf("cluster-fanout: skipped (no --postgres)")
		return nil
	}
	n := cmp.Or(s.o.ClusterFanout, 1000)
	o := FanoutOptions{Members: []int{n}, Messages: s.o.FanoutMessages}
	s.progressf("baseline: fan-out to %d members on one qimd on PostgreSQL", n)
	single, err := s.fanoutPG(ctx, "qimd-pg-fanout", 1, o)
	if err != nil {
		return err
	}
	clustered, err := s.fanoutPG(ctx, "cluster-fanout", clusterNodes, o)
	if err != nil {
		return err
	}
	name := fmt.Sprintf("cluster-fanout-%d", n)
	s.emit(Line{name, clustered.Rate(), "deliveries/s", single.Rate()})
	s.emit(Line{name + "-p99", ms(clustered.LastRecipient.P99), "ms", ms(single.LastRecipient.P99)})
	return nil
}

// fanoutPG runs the fanout of o, one group size, on qimd on a new database
// of o.Postgres (dropped after): one qimd named name if nodes is 1, else a
// cluster of that many. The qimd processes are killed before it returns.
func (s *suite) fanoutPG(ctx context.Context, name string, nodes int, o FanoutOptions) (FanoutResult, error) {
	dbURL, drop, err := pgdb.Create(ctx, s.o.Postgres, "qimbench_")
	if err != nil {
		return FanoutResult{}, fmt.Errorf("bench: %w", err)
	}
	defer drop()
	var envs []*Env
	if nodes == 1 {
		env, p, err := s.startQimd(ctx, name, filepath.Join(s.o.Dir, name), freeUDP(), freeTCP(), "--store", dbURL)
		if p.cmd != nil {
			defer func() {
				p.cmd.Process.Kill()
				<-p.exited
			}()
		}
		if err != nil {
			return FanoutResult{}, err
		}
		envs = []*Env{env}
	} else {
		c, err := s.startCluster(ctx, name, nodes, dbURL)
		if err != nil {
			return FanoutResult{}, err
		}
		defer c.kill()
		envs = c.nodes
	}
	rs, err := FanoutAcross(ctx, envs, o)
	if err != nil {
		return FanoutResult{}, err
	}
	return rs[0], nil
}

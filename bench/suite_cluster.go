package bench

import (
	"cmp"
	"context"
	"fmt"
	"sync"

	"github.com/qim-im/qim/internal/pgdb"
)

// clusterNodes is how many qimd nodes the cluster scenarios run.
const clusterNodes = 3

// clusterPair runs pair-durable over a cluster of three qimd nodes (see
// pairOnPG), so that every message crosses from one node to another.
func (s *suite) clusterPair(ctx context.Context) error {
	return s.pairOnPG(ctx, "cluster-pair-durable", "cluster-pair", clusterNodes)
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
	envs, stop, err := s.startOnPG(ctx, name, nodes, dbURL)
	if err != nil {
		return FanoutResult{}, err
	}
	defer stop()
	rs, err := FanoutAcross(ctx, envs, o)
	if err != nil {
		return FanoutResult{}, err
	}
	return rs[0], nil
}

// startOnPG starts qimd on the database dbURL: one qimd named name if
// nodes is 1, else a cluster of that many (startCluster). stop kills them
// and waits until they have exited; it may be called more than once.
func (s *suite) startOnPG(ctx context.Context, name string, nodes int, dbURL string) (envs []*Env, stop func(), err error) {
	if nodes > 1 {
		c, err := s.startCluster(ctx, name, nodes, dbURL)
		if err != nil {
			return nil, nil, err
		}
		return c.nodes, sync.OnceFunc(c.kill), nil
	}
	env, kill, err := s.startSingle(ctx, name, "--store", dbURL)
	if err != nil {
		return nil, nil, err
	}
	return []*Env{env}, kill, nil
}

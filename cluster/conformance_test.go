package cluster

import (
	"testing"

	"github.com/qim-im/qim/core"
	"github.com/qim-im/qim/core/routertest"
)

// TestNATSRouterConformance runs the router conformance suite on
// NATSRouters connected to embedded NATS servers: one router opened as
// every node (one node), every node's router on one server, and every
// node with its own server of a cluster (two or three nodes, as the suite
// asks).
func TestNATSRouterConformance(t *testing.T) {
	for _, tt := range []struct {
		name string
		open func(t *testing.T, nodes int) []core.Router
	}{
		{"OneNode", func(t *testing.T, nodes int) []core.Router {
			servers := startCluster(t, 1)
			r := openNodes(t, servers, RouterConfig{})[0]
			rs := make([]core.Router, nodes)
			for i := range rs {
				rs[i] = r
			}
			return rs
		}},
		{"SharedServer", func(t *testing.T, nodes int) []core.Router {
			servers := startCluster(t, 1)
			shared := make([]*Server, nodes)
			for i := range shared {
				shared[i] = servers[0]
			}
			return routers(openNodes(t, shared, RouterConfig{}))
		}},
		{"ServerPerNode", func(t *testing.T, nodes int) []core.Router {
			return routers(openNodes(t, startCluster(t, nodes), RouterConfig{}))
		}},
	} {
		t.Run(tt.name, func(t *testing.T) { routertest.Run(t, tt.open) })
	}
}

func routers(rs []*NATSRouter) []core.Router {
	out := make([]core.Router, len(rs))
	for i, r := range rs {
		out[i] = r
	}
	return out
}

package core_test

import (
	"testing"

	"github.com/qim-im/qim/core"
	"github.com/qim-im/qim/core/routertest"
)

// TestLocalRouterConformance runs the router conformance suite on
// LocalRouter: its "nodes" are one router, as in one process.
func TestLocalRouterConformance(t *testing.T) {
	routertest.Run(t, func(t *testing.T, nodes int) []core.Router {
		r := new(core.LocalRouter)
		rs := make([]core.Router, nodes)
		for i := range rs {
			rs[i] = r
		}
		return rs
	})
}

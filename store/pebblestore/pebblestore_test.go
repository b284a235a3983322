package pebblestore

import (
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.uber.org/goleak"

	"github.com/qim-im/qim/store"
	"github.com/qim-im/qim/store/storetest"
)

func openT(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// TestConformance runs the suite on disk with every write synced, as in
// production.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return openT(t, t.TempDir(), Options{})
	})
}

// TestConformanceMem runs the suite on an in-memory file system without
// syncs, the configuration other packages' tests may use.
func TestConformanceMem(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return openT(t, "db", Options{FS: vfs.NewMem(), NoSync: true})
	})
}

func TestReopen(t *testing.T) {
	storetest.RunReopen(t, func(t *testing.T, dir string) store.Store {
		return openT(t, dir, Options{})
	})
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

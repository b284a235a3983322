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

func TestInvalidIDs(t *testing.T) {
	s := openT(t, t.TempDir(), Options{NoSync: true})
	defer s.Close()
	ctx := t.Context()
	for name, err := range map[string]error{
		"app with NUL":  s.AddContact(ctx, "org/a\x00b", "alice", "bob"),
		"empty user":    s.AddContact(ctx, "org/app", "", "bob"),
		"device w/ NUL": s.SetAcked(ctx, "org/app", "alice", "ph\x00one", "u:a:b", 1),
		"empty conv": func() error {
			_, err := s.Messages(ctx, "org/app", "", 0, 10)
			return err
		}(),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

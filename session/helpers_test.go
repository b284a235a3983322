package session

import (
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/qim-im/qim/core"
	"github.com/qim-im/qim/store/pebblestore"
)

// newDevices returns a device layer with cfg over a hub with hubCfg and an
// in-memory Pebble store (hubCfg.Store, if set, is used instead), closed
// when the test ends.
func newDevices(t testing.TB, cfg Config, hubCfg core.Config) *Devices {
	t.Helper()
	if hubCfg.Store == nil {
		st, err := pebblestore.Open("db", pebblestore.Options{FS: vfs.NewMem(), NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		hubCfg.Store = st
	}
	h, err := core.NewHub(hubCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	cfg.Hub = h
	d, err := NewDevices(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

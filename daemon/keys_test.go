package daemon

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"testing"
)

// TestServerKeysSingleNode checks that server id 0 derives the stateless
// reset and session ticket keys of the versions before clusters, from the
// same master key: a single node upgraded in place keeps resetting the
// connections it lost and resuming its devices' sessions across the
// restart. The expected values were derived with those versions' code.
func TestServerKeysSingleNode(t *testing.T) {
	master := make([]byte, 32)
	for i := range master {
		master[i] = byte(i)
	}
	k, err := deriveKeys(master, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := hex.EncodeToString(k.reset[:]), "9450adf1c673c20a46ec7589cd4802b397169b25635337be58494d7fdeb038a2"; got != want {
		t.Errorf("stateless reset key %s, want %s", got, want)
	}
	if got, want := hex.EncodeToString(k.ticket[:]), "7f536b8aae35f468414d1b24de8ef8ef83f872018bd201d2c7eb6a160d1bc7de"; got != want {
		t.Errorf("session ticket key %s, want %s", got, want)
	}
}

// TestServerKeysCluster checks which keys the nodes of a cluster (one
// master key, different server ids) share and which they do not, and that
// a node's keys stay the same across restarts.
func TestServerKeysCluster(t *testing.T) {
	dir := t.TempDir()
	if _, err := QUICLB(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("QUICLB without a master key: %v, want ErrNotExist", err)
	}
	keys := map[int]*serverKeys{}
	for _, id := range []int{0, 1, 2, MaxServerID} {
		k, err := loadServerKeys(dir, id) // creates the master key on the first
		if err != nil {
			t.Fatal(err)
		}
		again, err := loadServerKeys(dir, id) // a restart
		if err != nil {
			t.Fatal(err)
		}
		if *again != *k {
			t.Errorf("server id %d: the keys changed across a restart", id)
		}
		keys[id] = k
	}
	if info, err := os.Stat(masterKeyPath(dir)); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("master key: %v, %v; want mode 0600", info, err)
	}
	for a, ka := range keys {
		for b, kb := range keys {
			if a == b {
				continue
			}
			if ka.reset == kb.reset {
				t.Errorf("server ids %d and %d have the same stateless reset key", a, b)
			}
			if ka.ticket != kb.ticket || ka.token != kb.token || ka.quicLB != kb.quicLB {
				t.Errorf("server ids %d and %d do not share the session ticket, token and QUIC-LB keys", a, b)
			}
		}
	}
	k := keys[0]
	distinct := map[string]bool{string(k.reset[:]): true, string(k.ticket[:]): true, string(k.token[:]): true, string(k.quicLB[:]): true}
	if len(distinct) != 4 {
		t.Error("two keys of one node are the same")
	}

	lb, err := QUICLB(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(lb.Key, k.quicLB[:]) || lb.CIDLen() != 17 {
		t.Errorf("QUICLB = %+v: want the QUIC-LB key and 17-octet connection IDs", lb)
	}

	for _, id := range []int{-1, MaxServerID + 1} {
		if _, err := loadServerKeys(dir, id); err == nil {
			t.Errorf("server id %d accepted", id)
		}
	}
	if err := os.WriteFile(masterKeyPath(dir), []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadServerKeys(dir, 1); err == nil {
		t.Error("a master key of 5 bytes accepted")
	}
}

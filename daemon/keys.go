package daemon

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/quic-go/quic-go"
)

// serverKeys are secrets that must outlive a restart of the server, and
// that the nodes of a cluster share or keep apart. All are derived (HKDF-SHA256,
// no salt, the label as info) from one random master key in
// DATA/keys/server.key (32 bytes, mode 0600), created on first start; the
// nodes of a cluster each have a copy of it.
//
//   - The TLS session ticket key ("qim session tickets"), shared: devices
//     resume in 0-RTT across a restart, and on any node.
//   - The QUIC token key ("qim quic tokens"), shared: the address-validation
//     tokens of a Retry or a NEW_TOKEN frame are accepted by any node, and
//     after a restart.
//   - The QUIC-LB key ("qim quic-lb", 16 bytes), shared: it encrypts the
//     server id in connection IDs (see quicLB), and the load balancer has
//     it too.
//   - The QUIC stateless reset key, the node's own: "qim stateless reset"
//     for server id 0 (a single node; the key of versions before
//     clusters), "qim stateless reset, server N" for server id N. A
//     restarted node answers packets of connections it lost with a
//     stateless reset, so that devices learn at once that they must
//     reconnect (instead of waiting for their idle timeout); a node that
//     gets a packet of another node's connection (a balancer's mistake, or
//     a device that moved) answers with a reset the device ignores, so it
//     never ends another node's connection.
type serverKeys struct {
	reset  quic.StatelessResetKey
	ticket [32]byte
	token  quic.TokenGeneratorKey
	quicLB [16]byte
}

// MaxServerID is the largest server id (Config.ServerID): connection IDs
// carry it in 2 octets.
const MaxServerID = 1<<16 - 1

// masterKeyPath is where a data directory keeps its master key.
func masterKeyPath(dataDir string) string { return filepath.Join(keysDir(dataDir), "server.key") }

// loadServerKeys reads, or creates, the data directory's master key and
// derives the keys of the server with serverID from it.
func loadServerKeys(dataDir string, serverID int) (*serverKeys, error) {
	if serverID < 0 || serverID > MaxServerID {
		return nil, fmt.Errorf("daemon: server id %d: want 0 to %d", serverID, MaxServerID)
	}
	path := masterKeyPath(dataDir)
	master, err := readMasterKey(path)
	if errors.Is(err, fs.ErrNotExist) {
		master = make([]byte, 32)
		rand.Read(master)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("daemon: server key: %w", err)
		}
		if err := os.WriteFile(path, master, 0o600); err != nil {
			return nil, fmt.Errorf("daemon: server key: %w", err)
		}
	} else if err != nil {
		return nil, err
	}
	return deriveKeys(master, serverID)
}

// readMasterKey reads and checks the master key at path. An error wraps
// fs.ErrNotExist if there is none.
func readMasterKey(path string) ([]byte, error) {
	master, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("daemon: server key: %w", err)
	}
	if len(master) != 32 {
		return nil, fmt.Errorf("daemon: server key %s: want 32 bytes, have %d", path, len(master))
	}
	return master, nil
}

// deriveKeys derives the keys of the server with serverID from master.
func deriveKeys(master []byte, serverID int) (*serverKeys, error) {
	resetLabel := "qim stateless reset"
	if serverID != 0 {
		resetLabel = fmt.Sprintf("qim stateless reset, server %d", serverID)
	}
	var k serverKeys
	for _, d := range []struct {
		label string
		out   []byte
	}{
		{resetLabel, k.reset[:]},
		{"qim session tickets", k.ticket[:]},
		{"qim quic tokens", k.token[:]},
		{"qim quic-lb", k.quicLB[:]},
	} {
		b, err := hkdf.Key(sha256.New, master, nil, d.label, len(d.out))
		if err != nil {
			return nil, fmt.Errorf("daemon: derive %s key: %w", d.label, err)
		}
		copy(d.out, b)
	}
	return &k, nil
}

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

// serverKeys are secrets that must outlive a restart of the server:
//
//   - the QUIC stateless reset key, so that a restarted server answers
//     packets of connections it lost with a stateless reset, and devices
//     learn at once that they must reconnect (instead of waiting for their
//     idle timeout);
//   - the TLS session ticket key, so that devices resume in 0-RTT across a
//     restart too.
//
// Both are derived from one random master key in DATA/keys/server.key
// (mode 0600), created on first start.
type serverKeys struct {
	reset  quic.StatelessResetKey
	ticket [32]byte
}

// loadServerKeys reads, or creates, the data directory's master key and
// derives the server's keys from it.
func loadServerKeys(dataDir string) (*serverKeys, error) {
	path := filepath.Join(dataDir, "keys", "server.key")
	master, err := os.ReadFile(path)
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
		return nil, fmt.Errorf("daemon: server key: %w", err)
	}
	if len(master) != 32 {
		return nil, fmt.Errorf("daemon: server key %s: want 32 bytes, have %d", path, len(master))
	}
	var k serverKeys
	for _, d := range []struct {
		label string
		out   []byte
	}{
		{"qim stateless reset", k.reset[:]},
		{"qim session tickets", k.ticket[:]},
	} {
		b, err := hkdf.Key(sha256.New, master, nil, d.label, len(d.out))
		if err != nil {
			return nil, fmt.Errorf("daemon: derive %s key: %w", d.label, err)
		}
		copy(d.out, b)
	}
	return &k, nil
}

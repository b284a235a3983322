package daemon

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// CopyShared copies what the nodes of a cluster share from the data
// directory src to dst, as an operator does for a new node: the CA and
// server certificate (CertsDir), the server key behind session tickets,
// tokens and QUIC-LB (DATA/keys) and the application secrets (AppsDir).
// Files keep their permissions. dst gets no store: a cluster's store is
// PostgreSQL.
func CopyShared(src, dst string) error {
	for _, dir := range []func(string) string{CertsDir, keysDir, AppsDir} {
		if err := copyTree(dir(src), dir(dst)); err != nil {
			return fmt.Errorf("daemon: copy %s: %w", dir(src), err)
		}
	}
	return nil
}

// keysDir is where a data directory's server key lives.
func keysDir(dataDir string) string { return filepath.Join(dataDir, "keys") }

// copyTree copies the directory tree src to dst, keeping permissions.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := e.Info()
		if err != nil {
			return err
		}
		if e.IsDir() {
			return os.MkdirAll(target, info.Mode().Perm())
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, info.Mode().Perm())
	})
}

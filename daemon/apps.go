package daemon

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/qim-im/qim/auth"
	"github.com/qim-im/qim/store"
)

// Applications live in the data directory, one secret file each:
// DataDir/apps/ORG/APPKEY.secret, holding the hex-encoded secret (mode
// 0600). The server loads them into the store when it starts; `qimd token`
// reads them to mint tokens while the server runs (the store itself is
// locked by the server).

// DemoOrg and DemoAppkey name the development application created on first
// start.
const (
	DemoOrg    = "demo"
	DemoAppkey = "demo"
)

// AppsDir is where a data directory keeps application secrets.
func AppsDir(dataDir string) string { return filepath.Join(dataDir, "apps") }

func secretPath(dataDir, org, appkey string) string {
	return filepath.Join(AppsDir(dataDir), org, appkey+".secret")
}

// CreateApp writes a new application with a random secret. It fails if the
// application exists.
func CreateApp(dataDir, org, appkey string) ([]byte, error) {
	if !auth.ValidID(org) || !auth.ValidID(appkey) {
		return nil, errors.New("daemon: org and appkey must be 1-64 characters of A-Z a-z 0-9 . _ @ -")
	}
	secret, err := auth.NewSecret()
	if err != nil {
		return nil, err
	}
	p := secretPath(dataDir, org, appkey)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return nil, fmt.Errorf("daemon: create app: %w", err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("daemon: create app: %w", err)
	}
	_, err = f.WriteString(hex.EncodeToString(secret) + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(p)
		return nil, fmt.Errorf("daemon: create app: %w", err)
	}
	return secret, nil
}

// AppSecret reads an application's secret.
func AppSecret(dataDir, org, appkey string) ([]byte, error) {
	if !auth.ValidID(org) || !auth.ValidID(appkey) {
		return nil, errors.New("daemon: org and appkey must be 1-64 characters of A-Z a-z 0-9 . _ @ -")
	}
	b, err := os.ReadFile(secretPath(dataDir, org, appkey))
	if err != nil {
		return nil, fmt.Errorf("daemon: application %s/%s: %w", org, appkey, err)
	}
	secret, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(secret) < 16 {
		return nil, fmt.Errorf("daemon: application %s/%s: secret file is not a hex secret of at least 16 bytes", org, appkey)
	}
	return secret, nil
}

// LoadApps creates the demo application if the data directory has no
// applications, then puts every application into st. It returns what it
// created.
func LoadApps(ctx context.Context, dataDir string, st store.Store) (created []string, err error) {
	dir := AppsDir(dataDir)
	matches, _ := filepath.Glob(filepath.Join(dir, "*", "*.secret"))
	if len(matches) == 0 {
		if _, err := CreateApp(dataDir, DemoOrg, DemoAppkey); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, err
		}
		created = append(created, "development application demo/demo (secret in "+secretPath(dataDir, DemoOrg, DemoAppkey)+")")
		matches = []string{secretPath(dataDir, DemoOrg, DemoAppkey)}
	}
	for _, m := range matches {
		org := filepath.Base(filepath.Dir(m))
		appkey := strings.TrimSuffix(filepath.Base(m), ".secret")
		secret, err := AppSecret(dataDir, org, appkey)
		if err != nil {
			return nil, err
		}
		if err := st.PutApp(ctx, store.App{Org: org, Appkey: appkey, Secret: secret}); err != nil {
			return nil, fmt.Errorf("daemon: load application %s/%s: %w", org, appkey, err)
		}
	}
	return created, nil
}

// EnsureDemoApp creates the demo application if the data directory has no
// applications yet, as the server's first start does, and reports whether
// it did. `qimd token` and `qimd app create` call it first, so that
// whichever command runs first on a new data directory, the demo
// application exists afterwards.
func EnsureDemoApp(dataDir string) (created bool, err error) {
	if matches, _ := filepath.Glob(filepath.Join(AppsDir(dataDir), "*", "*.secret")); len(matches) > 0 {
		return false, nil
	}
	if _, err := CreateApp(dataDir, DemoOrg, DemoAppkey); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

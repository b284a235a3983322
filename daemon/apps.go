package daemon

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/qim-im/qim/auth"
	"github.com/qim-im/qim/store"
)

// Applications live in the data directory, one secret file each:
// DataDir/apps/ORG/APPKEY.secret, holding the hex-encoded secret (mode
// 0600). They are the only copy: the server reads them into an in-memory
// KeyRing when it starts and again every Config.AppsPoll, and never writes
// a secret into the store. `qimd token` reads them to mint tokens.

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

// checkApp checks org and appkey as application ids.
func checkApp(org, appkey string) error {
	if !auth.ValidID(org) || !auth.ValidID(appkey) {
		return errors.New("daemon: org and appkey must be 1-64 characters of A-Z a-z 0-9 . _ @ -")
	}
	return nil
}

// CreateApp writes a new application with a random secret. It fails if the
// application exists.
func CreateApp(dataDir, org, appkey string) ([]byte, error) {
	if err := checkApp(org, appkey); err != nil {
		return nil, err
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
	if err := checkApp(org, appkey); err != nil {
		return nil, err
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

// RemoveApp deletes an application's secret file. A running server notices
// within Config.AppsPoll (at once through `qimd app remove`, which also asks
// it over the admin socket) and ends the application's sessions.
func RemoveApp(dataDir, org, appkey string) error {
	if err := checkApp(org, appkey); err != nil {
		return err
	}
	p := secretPath(dataDir, org, appkey)
	if err := os.Remove(p); err != nil {
		return fmt.Errorf("daemon: remove app: %w", err)
	}
	os.Remove(filepath.Dir(p)) // the org's directory, if now empty
	return nil
}

// RotateApp replaces an existing application's secret with a new random
// one, atomically, and returns it. Tokens signed with the old secret stop
// verifying; a running server ends their sessions as for RemoveApp.
func RotateApp(dataDir, org, appkey string) ([]byte, error) {
	if err := checkApp(org, appkey); err != nil {
		return nil, err
	}
	if _, err := os.Stat(secretPath(dataDir, org, appkey)); err != nil {
		return nil, fmt.Errorf("daemon: rotate app: %w", err)
	}
	secret, err := auth.NewSecret()
	if err != nil {
		return nil, err
	}
	p := secretPath(dataDir, org, appkey)
	f, err := os.CreateTemp(filepath.Dir(p), ".rotate-*") // mode 0600
	if err != nil {
		return nil, fmt.Errorf("daemon: rotate app: %w", err)
	}
	_, err = f.WriteString(hex.EncodeToString(secret) + "\n")
	if serr := f.Sync(); err == nil {
		err = serr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), p)
	}
	if err != nil {
		os.Remove(f.Name())
		return nil, fmt.Errorf("daemon: rotate app: %w", err)
	}
	return secret, nil
}

// KeyRing holds the applications' secrets in memory, read from the secret
// files of a data directory, which are their only source of truth (nothing
// is copied into the store). It implements core.AppKeys. All methods are
// safe for concurrent use.
type KeyRing struct {
	// Static after construction.
	dataDir string

	mu      sync.RWMutex
	secrets map[string][]byte // by store.AppID; guarded by mu
}

// LoadKeyRing creates the demo application if the data directory has no
// applications, then reads every application's secret. Any secret it
// cannot read is an error. It returns what it created.
func LoadKeyRing(dataDir string) (k *KeyRing, created []string, err error) {
	if _, err := secretFiles(dataDir); err != nil {
		return nil, nil, err // the apps directory is unreadable
	}
	if made, err := EnsureDemoApp(dataDir); err != nil {
		return nil, nil, err
	} else if made {
		created = append(created, "development application demo/demo (secret in "+secretPath(dataDir, DemoOrg, DemoAppkey)+")")
	}
	k = &KeyRing{dataDir: dataDir, secrets: make(map[string][]byte)}
	if _, err := k.reload(true); err != nil {
		return nil, nil, err
	}
	return k, created, nil
}

// AppSecret implements core.AppKeys.
func (k *KeyRing) AppSecret(org, appkey string) ([]byte, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	s, ok := k.secrets[store.AppID(org, appkey)]
	return s, ok
}

// AppChange names an application whose secret changed or went away.
type AppChange struct {
	Org, Appkey string
	Removed     bool
}

// Reload reads the secret files again and returns the applications whose
// secret changed or whose file is gone. A secret file that exists but
// cannot be read keeps the secret it had (the error is returned, joined
// with any other), so that a passing fault does not end sessions.
func (k *KeyRing) Reload() ([]AppChange, error) { return k.reload(false) }

func (k *KeyRing) reload(strict bool) ([]AppChange, error) {
	matches, err := secretFiles(k.dataDir)
	if err != nil {
		return nil, err
	}
	next := make(map[string][]byte, len(matches))
	names := make(map[string][2]string, len(matches))
	var errs []error
	k.mu.RLock()
	for _, m := range matches {
		org := filepath.Base(filepath.Dir(m))
		appkey := strings.TrimSuffix(filepath.Base(m), ".secret")
		id := store.AppID(org, appkey)
		names[id] = [2]string{org, appkey}
		secret, err := AppSecret(k.dataDir, org, appkey)
		if err != nil {
			errs = append(errs, err)
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed between the listing and the read
			}
			if old, ok := k.secrets[id]; ok {
				next[id] = old
			}
			continue
		}
		next[id] = secret
	}
	var changes []AppChange
	for id, old := range k.secrets {
		if s, ok := next[id]; !ok || !bytes.Equal(s, old) {
			org, appkey, _ := strings.Cut(id, "/")
			changes = append(changes, AppChange{Org: org, Appkey: appkey, Removed: !ok})
		}
	}
	k.mu.RUnlock()
	if strict && len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	k.mu.Lock()
	k.secrets = next
	k.mu.Unlock()
	return changes, errors.Join(errs...)
}

// secretFiles lists a data directory's application secret files.
func secretFiles(dataDir string) ([]string, error) {
	dir := AppsDir(dataDir)
	if _, err := os.Stat(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("daemon: applications: %w", err)
	}
	matches, err := filepath.Glob(filepath.Join(dir, "*", "*.secret"))
	if err != nil {
		return nil, fmt.Errorf("daemon: applications: %w", err)
	}
	return matches, nil
}

// EnsureDemoApp creates the demo application if the data directory has no
// applications yet, as the server's first start does, and reports whether
// it did. `qimd token` and `qimd app create` call it first, so that
// whichever command runs first on a new data directory, the demo
// application exists afterwards.
func EnsureDemoApp(dataDir string) (created bool, err error) {
	if matches, err := secretFiles(dataDir); err != nil || len(matches) > 0 {
		return false, err
	}
	if _, err := CreateApp(dataDir, DemoOrg, DemoAppkey); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/qim-im/qim/metrics"
	"github.com/qim-im/qim/push"
)

// DefaultPushDelay is Config.PushDelay's default: how long the devices of
// a message's recipients have to acknowledge it before the push gateway
// is told to wake them.
const DefaultPushDelay = 2 * time.Second

// PushSecretPath is where a data directory keeps the secret that signs
// push notifications when Config.PushSecretFile is empty.
func PushSecretPath(dataDir string) string { return filepath.Join(keysDir(dataDir), "push.secret") }

// pusher is the daemon's push worker and the goroutine that runs it.
type pusher struct {
	worker *push.Worker
	stop   context.CancelFunc
	done   chan struct{} // closed when worker.Run returns
}

// startPush starts the push worker when Config.PushWebhook is set, and
// returns the delay the hub gives the devices before a message's job
// comes due (core.Config.PushDelay), 0 without a webhook. The worker needs
// only the store: it may start before the hub.
func (d *Daemon) startPush(m *metrics.Metrics) (time.Duration, error) {
	cfg := d.cfg
	if cfg.PushWebhook == "" {
		return 0, nil
	}
	delay := cfg.PushDelay
	switch {
	case delay == 0:
		delay = DefaultPushDelay
	case delay < 0:
		return 0, fmt.Errorf("daemon: push delay %v: want a positive duration", delay)
	}
	secret, created, err := loadPushSecret(cfg.DataDir, cfg.PushSecretFile)
	if err != nil {
		return 0, err
	}
	if created {
		d.Created = append(d.Created, "push notification secret in "+PushSecretPath(cfg.DataDir)+" (give it to the push gateway; every node of a cluster needs a copy)")
	}
	pc := cfg.PushWorker
	pc.Store, pc.URL, pc.Secret, pc.Preview = d.store, cfg.PushWebhook, secret, !cfg.PushNoPreview
	pc.Logger, pc.Metrics = d.logger.With("part", "push"), m
	w, err := push.New(pc)
	if err != nil {
		return 0, fmt.Errorf("daemon: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.push = &pusher{worker: w, stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(d.push.done)
		w.Run(ctx)
	}()
	return delay, nil
}

// stopPush stops the push worker, if any, and waits for it: the jobs it
// was working on are due again at once, for the next start or another
// node. It must run before the store closes.
func (d *Daemon) stopPush() {
	if d.push == nil {
		return
	}
	d.push.stop()
	<-d.push.done
	d.push = nil
}

// loadPushSecret returns the secret in file (its contents less surrounding
// white space) or, when file is empty, in the data directory's
// PushSecretPath, which it creates with a random secret (64 hex digits) if
// it does not exist; created says it did.
func loadPushSecret(dataDir, file string) (secret []byte, created bool, err error) {
	path := file
	if path == "" {
		path = PushSecretPath(dataDir)
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && file == "" {
		var raw [32]byte
		rand.Read(raw[:])
		b = []byte(hex.EncodeToString(raw[:]) + "\n")
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, false, fmt.Errorf("daemon: push secret: %w", err)
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return nil, false, fmt.Errorf("daemon: push secret: %w", err)
		}
		created = true
	} else if err != nil {
		return nil, false, fmt.Errorf("daemon: push secret: %w", err)
	}
	if secret = bytes.TrimSpace(b); len(secret) == 0 {
		return nil, false, fmt.Errorf("daemon: push secret %s is empty", path)
	}
	return secret, created, nil
}

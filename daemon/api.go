package daemon

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"github.com/qim-im/qim/blob/dirblob"
	"github.com/qim-im/qim/httpapi"
)

// openAPI makes the HTTP API (package httpapi) that httpHandler returns: on
// the daemon's hub, its key ring, its devices, and the blob store
// (Config.Blobs, or a directory store in DATA/blobs that the daemon opens
// and closes), staging uploads in DATA/tmp.
func (d *Daemon) openAPI() error {
	cfg := d.cfg
	if cfg.NoHTTP {
		return nil
	}
	if d.blobs = cfg.Blobs; d.blobs == nil {
		st, err := dirblob.Open(BlobsDir(cfg.DataDir), dirblob.Options{Logger: d.logger})
		if err != nil {
			return fmt.Errorf("daemon: open blob store: %w", err)
		}
		d.blobs, d.ownBlobs = st, true
	}
	tmp := filepath.Join(cfg.DataDir, "tmp")
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("daemon: clear %s: %w", tmp, err)
	}
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	var err error
	d.api, err = httpapi.New(httpapi.Config{
		Hub:              d.hub,
		Apps:             d.apps,
		Sessions:         d.devices,
		Blobs:            d.blobs,
		TempDir:          tmp,
		PublicURL:        cfg.PublicURL,
		MaxUpload:        cfg.MaxUpload,
		UploadQuota:      cfg.UploadQuota,
		AuthFailureBurst: cfg.HTTPAuthFailureBurst,
		Metrics:          d.hub.Metrics(),
		Logger:           d.logger,
	})
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	return nil
}

// httpHandler returns the handler of the server's HTTP API, served over
// HTTP/3 and HTTPS on the server's port (web.go).
func (d *Daemon) httpHandler() http.Handler { return d.api }

// closeBlobs closes the blob store if the daemon opened it.
func (d *Daemon) closeBlobs() error {
	var err error
	if d.blobs != nil && d.ownBlobs {
		err = d.blobs.Close()
	}
	d.blobs = nil
	return err
}

// BlobsDir returns where the directory blob store of dataDir keeps uploads.
func BlobsDir(dataDir string) string { return filepath.Join(dataDir, "blobs") }

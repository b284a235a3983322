package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/qim-im/qim/auth"
)

// The admin socket lets local operators act on a running server. It is a
// unix socket, DATA/admin.sock, mode 0600 in the owner-only data directory,
// so only the server's own user can use it. Each connection carries one
// request, a JSON object on one line, and gets one JSON line back:
//
//	{"op":"end-sessions","org":"demo","appkey":"demo","user":"alice"}  -> {"ended":2}
//	{"op":"reload-apps"}                                                -> {"changed":[...],"ended":1}
//
// An error is answered {"error":"..."}. `qimd logout`, `qimd app remove` and
// `qimd app rotate` use it through Admin.

// AdminRequest is one request on the admin socket.
type AdminRequest struct {
	// Op is "end-sessions" (Org, Appkey and User: end every session of the
	// user, see session.Devices.EndSessions) or "reload-apps" (read the
	// application secrets again and end the sessions whose token no longer
	// verifies; the server also does that every Config.AppsPoll).
	Op          string `json:"op"`
	Org, Appkey string `json:",omitempty"`
	User        string `json:",omitempty"`
}

// AdminResponse is the answer to an AdminRequest.
type AdminResponse struct {
	// Ended is how many sessions the request ended.
	Ended int `json:"ended"`
	// Changed lists the applications reload-apps found changed or removed.
	Changed []AppChange `json:"changed,omitempty"`
	// Error is why the request failed; empty on success.
	Error string `json:"error,omitempty"`
}

// AdminSocket is the path of a data directory's admin socket.
func AdminSocket(dataDir string) string { return filepath.Join(dataDir, "admin.sock") }

// ErrNotRunning is returned by Admin when no server is serving the data
// directory's admin socket.
var ErrNotRunning = errors.New("daemon: no server is running on this data directory")

// Admin sends req to the server running on dataDir and returns its answer.
func Admin(ctx context.Context, dataDir string, req AdminRequest) (AdminResponse, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", AdminSocket(dataDir))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return AdminResponse{}, ErrNotRunning
		}
		return AdminResponse{}, fmt.Errorf("daemon: admin socket: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return AdminResponse{}, fmt.Errorf("daemon: admin socket: %w", err)
	}
	var resp AdminResponse
	if err := json.NewDecoder(bufio.NewReader(c)).Decode(&resp); err != nil {
		return AdminResponse{}, fmt.Errorf("daemon: admin socket: %w", err)
	}
	if resp.Error != "" {
		return resp, errors.New(resp.Error)
	}
	return resp, nil
}

// listenAdmin opens the admin socket. A stale socket of a server that did
// not exit cleanly is replaced: Start holds the store's lock, so no other
// server uses this data directory.
func (d *Daemon) listenAdmin() error {
	path := AdminSocket(d.cfg.DataDir)
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return err
	}
	d.adminLn = ln
	d.adminDone = make(chan struct{})
	go d.serveAdmin()
	return nil
}

// serveAdmin answers admin requests, one at a time, until closeParts closes
// the listener. It runs in its own goroutine and closes d.adminDone.
func (d *Daemon) serveAdmin() {
	defer close(d.adminDone)
	for {
		c, err := d.adminLn.Accept()
		if err != nil {
			return
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		var req AdminRequest
		var resp AdminResponse
		if err := json.NewDecoder(c).Decode(&req); err != nil {
			resp.Error = "bad request: " + err.Error()
		} else {
			resp = d.admin(req)
		}
		json.NewEncoder(c).Encode(resp)
		c.Close()
	}
}

// admin carries out one admin request.
func (d *Daemon) admin(req AdminRequest) AdminResponse {
	switch req.Op {
	case "end-sessions":
		for _, id := range []string{req.Org, req.Appkey, req.User} {
			if !auth.ValidID(id) {
				return AdminResponse{Error: "org, appkey and user must be 1-64 characters of A-Z a-z 0-9 . _ @ -"}
			}
		}
		n := d.devices.EndSessions(req.Org, req.Appkey, req.User)
		d.logger.Info("admin: ended the sessions of a user", "org", req.Org, "appkey", req.Appkey, "user", req.User, "sessions", n)
		return AdminResponse{Ended: n}
	case "reload-apps":
		changes, ended, err := d.reloadApps()
		resp := AdminResponse{Ended: ended, Changed: changes}
		if err != nil {
			resp.Error = err.Error()
		}
		return resp
	default:
		return AdminResponse{Error: fmt.Sprintf("unknown op %q", req.Op)}
	}
}

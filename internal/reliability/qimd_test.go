package reliability_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qim-im/qim/certs"
	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/testserver"
)

// qimdProc runs cmd/qimd as a subprocess, so that it can be killed with
// SIGKILL and restarted on the same data directory and port.
type qimdProc struct {
	// Static after newQimd.
	t    *testing.T
	bin  string
	data string
	addr string
	log  *lockedBuffer // stderr of every run
	// args are more flags for qimd serve (--store ...); set before start.
	args []string

	// Set by the first start, static afterwards.
	tlsConf *tls.Config

	// Owned by the test goroutine.
	cmd        *exec.Cmd
	exited     chan struct{} // closed when cmd has been waited for
	probeToken string
}

// qimdBin is cmd/qimd, built once for all the tests of the package run
// (with the race detector when the test binary has it) and removed by
// TestMain.
var qimdBin = testserver.Binary{Pkg: "github.com/qim-im/qim/cmd/qimd", Race: raceEnabled}

// freeUDPAddr returns a 127.0.0.1 address whose UDP port, and the same
// TCP port (qimd's HTTPS), were free a moment ago.
func freeUDPAddr(t *testing.T) string {
	t.Helper()
	for {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := pc.LocalAddr().String()
		ln, err := net.Listen("tcp", addr)
		pc.Close()
		if err == nil {
			ln.Close()
			return addr
		}
	}
}

// newQimd returns the server of data on addr, not started. It is killed,
// if running, when the test ends.
func newQimd(t *testing.T, bin, data, addr string) *qimdProc {
	p := &qimdProc{t: t, bin: bin, data: data, addr: addr, log: new(lockedBuffer)}
	t.Cleanup(func() {
		if p.cmd != nil {
			p.kill()
		}
		if t.Failed() {
			t.Logf("qimd stderr (last 16 KiB):\n%s", p.log.tail(16384))
		}
	})
	return p
}

// start starts the server and waits until it answers a CONNECT. A start
// that fails (the port still held, say) is retried.
func (p *qimdProc) start() {
	p.t.Helper()
	deadline := time.Now().Add(waitTime)
	for time.Now().Before(deadline) {
		p.cmd = exec.Command(p.bin, append([]string{"serve", "--data", p.data, "--listen", p.addr, "--log-level", "info"}, p.args...)...)
		p.cmd.Env = qimdEnv()
		p.cmd.Stdout = p.log
		p.cmd.Stderr = p.log
		if err := p.cmd.Start(); err != nil {
			p.t.Fatalf("start qimd: %v", err)
		}
		exited := make(chan struct{})
		p.exited = exited
		go func(cmd *exec.Cmd) {
			cmd.Wait()
			close(exited)
		}(p.cmd)
		if p.waitReady(deadline) {
			if p.tlsConf == nil {
				var err error
				if p.tlsConf, err = certs.ClientTLS(p.caFile(), false, "localhost"); err != nil {
					p.t.Fatalf("client TLS: %v", err)
				}
			}
			return
		}
		p.kill()
		time.Sleep(50 * time.Millisecond)
	}
	p.t.Fatalf("qimd did not start on %s in %v", p.addr, waitTime)
}

// waitReady polls the server with a send-only session until it answers,
// the process exits, or deadline passes.
func (p *qimdProc) waitReady(deadline time.Time) bool {
	p.t.Helper()
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			return false
		default:
		}
		if p.probeToken == "" {
			p.probeToken, _ = p.tryToken("probe")
		}
		if p.probeToken != "" {
			// A short timeout: a server not yet listening drops the
			// Initial packets silently.
			if c, err := p.dialOnce("probe", p.probeToken, "probe", true, 200*time.Millisecond); err == nil {
				c.Close()
				return true
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// kill sends SIGKILL and waits for the process to end.
func (p *qimdProc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
	p.cmd = nil
}

// stop sends SIGTERM, waits for a clean exit and returns the error of the
// process, if any.
func (p *qimdProc) stop() error {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(waitTime):
		p.kill()
		return errors.New("qimd did not exit on SIGTERM")
	}
	st := p.cmd.ProcessState
	p.cmd = nil
	if !st.Success() {
		return errors.New("qimd exited with " + st.String())
	}
	return nil
}

// qimdEnv is the environment of the subprocesses: a race-enabled binary
// otherwise sleeps a second before exiting.
func qimdEnv() []string {
	return append(os.Environ(), "GORACE=atexit_sleep_ms=0 halt_on_error=0")
}

// token mints a token with `qimd token`.
func (p *qimdProc) token(user string) string {
	p.t.Helper()
	tok, err := p.tryToken(user)
	if err != nil {
		p.t.Fatalf("qimd token --user %s: %v", user, err)
	}
	return tok
}

func (p *qimdProc) tryToken(user string) (string, error) {
	cmd := exec.Command(p.bin, "token", "--data", p.data, "--user", user)
	cmd.Env = qimdEnv()
	out, err := cmd.Output()
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

// config returns the client Config of user's device. The short idle timeout
// lets a device notice a killed server within seconds: a restarted server
// does not know the old connection, and (having no stateless reset key)
// stays silent about it. config may be called from any goroutine once the
// server has started.
func (p *qimdProc) config(user, token, device string) client.Config {
	return client.Config{
		Addr: p.addr, TLSConfig: p.tlsConf,
		Org: "demo", Appkey: "demo", User: user, Token: token, Device: device,
		QUICConfig: crashQUICConfig(),
	}
}

// caFile is the development CA the server creates on its first start.
func (p *qimdProc) caFile() string { return filepath.Join(p.data, "certs", certs.CACertFile) }

// dialOnce makes one attempt to connect user's device.
func (p *qimdProc) dialOnce(user, token, device string, sendOnly bool, timeout time.Duration) (*client.Client, error) {
	cfg := p.config(user, token, device)
	if cfg.TLSConfig == nil {
		// The probe of the first start, before p.tlsConf is set.
		var err error
		if cfg.TLSConfig, err = certs.ClientTLS(p.caFile(), false, "localhost"); err != nil {
			return nil, err
		}
	}
	cfg.SendOnly = sendOnly
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return client.Dial(ctx, cfg)
}

// lockedBuffer is a subprocess's stdout and stderr, written concurrently.
type lockedBuffer struct{ testserver.Buffer }

func (b *lockedBuffer) tail(n int) string {
	s := b.String()
	if len(s) > n {
		s = s[len(s)-n:]
	}
	return s
}

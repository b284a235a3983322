package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qim-im/qim/daemon"
	"github.com/qim-im/qim/internal/pgtest"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
	"github.com/qim-im/qim/store/pebblestore"
)

// qimdBin is cmd/qimd, built once for the package's tests and removed by
// TestMain.
var qimdBin = testserver.Binary{Pkg: "github.com/qim-im/qim/cmd/qimd"}

// needRoot skips a test that mounts file systems when not root, or fails
// it when QIM_REQUIRE_NETNS=1 says this is CI, where we are root.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("QIM_REQUIRE_NETNS") == "1" {
		t.Fatal("this test mounts a tmpfs and needs root (QIM_REQUIRE_NETNS=1)")
	}
	t.Skip("needs root to mount a tmpfs")
}

// smallDisk mounts a 4 MiB tmpfs on a new directory and returns it; it is
// unmounted when the test ends.
func smallDisk(t *testing.T) string {
	t.Helper()
	needRoot(t)
	dir := filepath.Join(t.TempDir(), "disk")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount: %v: %s", err, out)
		}
	})
	return dir
}

// fill writes a file in dir until the disk is full.
func fill(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return
		}
	}
}

// storeWithLog creates data's store with messages of at least size bytes
// (at least one) in its log, as a server leaves it.
func storeWithLog(t *testing.T, data string, size int) {
	t.Helper()
	s, err := pebblestore.Open(filepath.Join(data, "store"), pebblestore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	text := bytes.Repeat([]byte("x"), 4000)
	for i := 0; i == 0 || i*len(text) < size; i++ {
		_, err = s.Append(t.Context(), []store.Append{{App: "demo/demo", Conv: store.DirectConv("alice", "bob"), Members: []string{"alice", "bob"},
			Msg: &qimpb.Message{Type: qimpb.MessageType_TXT, Payload: text, FromUser: "alice", ToUser: "bob", ClientMsgId: fmt.Sprint(i)}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestStartupFailures runs `qimd serve` where it cannot start. Each must
// end at once with one clear line and exit status 1. Before, a data disk
// that was full at the first start made qimd panic (a nil *Daemon in
// Start's cleanup), and a full disk under an existing store made it hang
// for good, burning a core, writing megabytes of log and ignoring SIGTERM.
func TestStartupFailures(t *testing.T) {
	bin := qimdBin.Path(t)
	for _, tt := range []struct {
		name  string
		setup func(t *testing.T) (data string, args []string)
		want  string
	}{
		{"full disk at the first start", func(t *testing.T) (string, []string) {
			disk := smallDisk(t)
			fill(t, disk)
			return filepath.Join(disk, "data"), nil
		}, "no space left on device"},
		{"full disk under an existing store", func(t *testing.T) (string, []string) {
			disk := smallDisk(t)
			data := filepath.Join(disk, "data")
			storeWithLog(t, data, 0)
			fill(t, disk)
			return data, nil
		}, "no space left on device"},
		{"too little space to replay the store's log", func(t *testing.T) (string, []string) {
			disk := smallDisk(t)
			data := filepath.Join(disk, "data")
			storeWithLog(t, data, 1<<20)
			fill(t, disk)
			// Free 1.5 MiB: the write check passes, the log does not fit.
			info, err := os.Stat(filepath.Join(disk, "fill"))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(filepath.Join(disk, "fill"), info.Size()-3<<19); err != nil {
				t.Fatal(err)
			}
			return data, nil
		}, "not enough disk space to open it"},
		{"read-only data directory", func(t *testing.T) (string, []string) {
			disk := smallDisk(t)
			data := filepath.Join(disk, "data")
			storeWithLog(t, data, 0)
			if out, err := exec.Command("mount", "-o", "remount,ro", disk).CombinedOutput(); err != nil {
				t.Fatalf("remount ro: %v: %s", err, out)
			}
			return data, nil
		}, "read-only file system"},
		{"unreadable server key", func(t *testing.T) (string, []string) {
			data := filepath.Join(t.TempDir(), "data")
			if err := os.MkdirAll(filepath.Join(data, "keys", "server.key"), 0o700); err != nil {
				t.Fatal(err)
			}
			return data, nil
		}, "server key"},
		{"server id out of range", func(t *testing.T) (string, []string) {
			return filepath.Join(t.TempDir(), "data"), []string{"--server-id", "65536"}
		}, "server id 65536: want 0 to 65535"},
		{"cluster on the embedded store", func(t *testing.T) (string, []string) {
			return filepath.Join(t.TempDir(), "data"), []string{"--nats-embed", "--server-id", "1"}
		}, "a cluster needs a store every node shares"},
		{"cluster node without a server id", func(t *testing.T) (string, []string) {
			return filepath.Join(t.TempDir(), "data"), []string{"--nats", "nats://127.0.0.1:1", "--store", pgtest.URL()}
		}, "needs its own server id"},
		{"embedded NATS options without --nats-embed", func(t *testing.T) (string, []string) {
			return filepath.Join(t.TempDir(), "data"), []string{"--nats-cluster", "127.0.0.1:6222"}
		}, "add --nats-embed"},
		{"bad application secret", func(t *testing.T) (string, []string) {
			data := filepath.Join(t.TempDir(), "data")
			if err := os.MkdirAll(filepath.Join(data, "apps", "acme"), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(data, "apps", "acme", "chat.secret"), []byte("not hex\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			return data, nil
		}, "application acme/chat: secret file is not a hex secret"},
		{"port taken", func(t *testing.T) (string, []string) {
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { pc.Close() })
			return filepath.Join(t.TempDir(), "data"), []string{"--listen", pc.LocalAddr().String()}
		}, "address already in use"},
		{"TCP port taken", func(t *testing.T) (string, []string) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			return filepath.Join(t.TempDir(), "data"), []string{"--listen", ln.Addr().String()}
		}, "listen for HTTPS on TCP"},
		{"bad certificate", func(t *testing.T) (string, []string) {
			dir := t.TempDir()
			pem := filepath.Join(dir, "bad.pem")
			if err := os.WriteFile(pem, []byte("not a certificate\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(dir, "data"), []string{"--cert", pem, "--key", pem}
		}, "load server key pair"},
		{"missing certificate", func(t *testing.T) (string, []string) {
			dir := t.TempDir()
			return filepath.Join(dir, "data"), []string{"--cert", filepath.Join(dir, "none.pem"), "--key", filepath.Join(dir, "none.key")}
		}, "no such file or directory"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			data, args := tt.setup(t)
			args = append([]string{"serve", "--data", data, "--listen", "127.0.0.1:0", "--log-level", "info"}, args...)
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, args...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			start := time.Now()
			err := cmd.Run()
			took := time.Since(start)
			if ctx.Err() != nil {
				t.Fatalf("qimd still running after 20 s (killed); %d bytes of stderr, the last ones:\n%s", stderr.Len(), tail(stderr.String(), 2000))
			}
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Errorf("qimd exited with %v, want status 1", err)
			}
			out := strings.TrimSpace(stderr.String())
			if lines := strings.Split(out, "\n"); len(lines) != 1 || !strings.HasPrefix(out, "qimd: ") || !strings.Contains(out, tt.want) {
				t.Errorf("stderr is not one line \"qimd: ...%s...\":\n%s", tt.want, tail(out, 4000))
			}
			if stdout.Len() > 0 {
				t.Errorf("stdout: %s", stdout.String())
			}
			t.Logf("%v: %s", took.Round(time.Millisecond), out)
		})
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// TestLogoutCommand ends a user's sessions with `qimd logout` against a
// running server, and checks what it prints without one.
func TestLogoutCommand(t *testing.T) {
	data := t.TempDir()
	d, err := daemon.Start(daemon.Config{Listen: "127.0.0.1:0", DataDir: data, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var out, errOut bytes.Buffer
	if err := run(t.Context(), []string{"qimd", "logout", "--data", data, "--user", "alice"}, &out, &errOut); err != nil || out.String() != "ended 0 session(s)\n" {
		t.Errorf("qimd logout: %v, %q %q", err, out.String(), errOut.String())
	}
	err = run(t.Context(), []string{"qimd", "logout", "--data", t.TempDir(), "--user", "alice"}, &out, &errOut)
	if !errors.Is(err, daemon.ErrNotRunning) {
		t.Errorf("qimd logout without a server: %v, want %v", err, daemon.ErrNotRunning)
	}
}

// Package netlab builds small real networks for tests: two network
// namespaces, a phone and a server, joined by two veth links, "wifi" and
// "cellular". Links can be taken down mid-test, as when a phone walks out of
// Wi-Fi. It needs root and iproute2's ip command.
//
// The test process itself stays in its own namespace: it creates sockets
// inside the lab's namespaces (a socket keeps the namespace it was created
// in), so a client and a server in one test process talk across real
// interfaces.
package netlab

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Addresses in the lab. The server's address is on its loopback interface,
// reachable over either link; the phone prefers wifi (a lower route
// metric), so traffic moves to cellular when wifi goes down.
const (
	PhoneWifiIP = "10.77.1.2"
	PhoneCellIP = "10.77.2.2"
	ServerIP    = "10.77.9.9"
)

// Lab is a running two-namespace network.
type Lab struct {
	Phone  string // namespace of the phone
	Server string // namespace of the server
	// WifiLink and CellLink are the phone-side interface names.
	WifiLink, CellLink string
	t                  testing.TB
}

// Available reports why a lab cannot be built here, or "" if it can.
func Available() string {
	if os.Geteuid() != 0 {
		return "netlab needs root (network namespaces and veth links)"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "netlab needs iproute2's ip command (apt-get install iproute2)"
	}
	return ""
}

// New builds a lab and removes it when the test ends. If the lab cannot be
// built here, the test is skipped, loudly, unless QIM_REQUIRE_NETNS is set
// (CI sets it), when it fails.
func New(t testing.TB) *Lab {
	t.Helper()
	if why := Available(); why != "" {
		if os.Getenv("QIM_REQUIRE_NETNS") != "" {
			t.Fatalf("netlab: %s, and QIM_REQUIRE_NETNS is set", why)
		}
		fmt.Fprintf(os.Stderr, "\n*** SKIPPING %s: %s ***\n\n", t.Name(), why)
		t.Skipf("NOT RUN: %s", why)
	}
	id := fmt.Sprintf("%d", os.Getpid()%100000)
	l := &Lab{
		Phone:    "qimphone" + id,
		Server:   "qimsrv" + id,
		WifiLink: "qw" + id,
		CellLink: "qc" + id,
		t:        t,
	}
	t.Cleanup(l.remove)
	ph, sv := l.Phone, l.Server
	l.run("netns", "add", ph)
	l.run("netns", "add", sv)
	for _, link := range []struct{ name, peerNet, phoneIP, serverIP string }{
		{l.WifiLink, "10.77.1", PhoneWifiIP, "10.77.1.1"},
		{l.CellLink, "10.77.2", PhoneCellIP, "10.77.2.1"},
	} {
		peer := link.name + "s"
		l.run("link", "add", link.name, "netns", ph, "type", "veth", "peer", "name", peer, "netns", sv)
		l.run("-n", ph, "addr", "add", link.phoneIP+"/24", "dev", link.name)
		l.run("-n", sv, "addr", "add", link.serverIP+"/24", "dev", peer)
		l.run("-n", ph, "link", "set", link.name, "up")
		l.run("-n", sv, "link", "set", peer, "up")
	}
	l.run("-n", ph, "link", "set", "lo", "up")
	l.run("-n", sv, "link", "set", "lo", "up")
	l.run("-n", sv, "addr", "add", ServerIP+"/32", "dev", "lo")
	l.run("-n", ph, "route", "add", ServerIP+"/32", "via", "10.77.1.1", "dev", l.WifiLink, "metric", "10")
	l.run("-n", ph, "route", "add", ServerIP+"/32", "via", "10.77.2.1", "dev", l.CellLink, "metric", "20")
	return l
}

// SetLink takes a phone-side link up or down.
func (l *Lab) SetLink(link string, up bool) {
	l.t.Helper()
	state := "down"
	if up {
		state = "up"
	}
	l.run("-n", l.Phone, "link", "set", link, state)
}

// ListenUDP opens a UDP socket on addr inside namespace ns.
func (l *Lab) ListenUDP(ns, addr string) (*net.UDPConn, error) {
	var conn *net.UDPConn
	err := inNamespace(ns, func() error {
		a, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			return err
		}
		conn, err = net.ListenUDP("udp", a)
		return err
	})
	return conn, err
}

// inNamespace runs f on a fresh OS thread switched into namespace ns. The
// thread is switched back before it is released; if that fails, the thread
// is thrown away with its goroutine.
func inNamespace(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer self.Close()
		target, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netlab: enter %s: %w", ns, err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			// Still locked: the thread ends with this goroutine.
			errc <- fmt.Errorf("netlab: leave %s: %w", ns, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

func (l *Lab) run(args ...string) {
	l.t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		l.t.Fatalf("netlab: ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// remove deletes the namespaces; their veth links go with them.
func (l *Lab) remove() {
	for _, ns := range []string{l.Phone, l.Server} {
		exec.Command("ip", "netns", "del", ns).Run()
	}
}

package daemon_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/daemon"
	"github.com/qim-im/qim/internal/testserver"
)

// httpTLS returns a client TLS configuration that trusts srv's CA and
// offers protos.
func httpTLS(t *testing.T, srv *testserver.Server, protos ...string) *tls.Config {
	t.Helper()
	c := srv.ClientTLS()
	c.NextProtos = protos
	return c
}

// checkHealth checks a response of GET /v1/health and closes its body.
func checkHealth(t *testing.T, resp *http.Response, proto string) {
	t.Helper()
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	if resp.StatusCode != http.StatusOK || string(body) != "{\"status\":\"ok\"}\n" || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /v1/health: %d %q (%s), want 200 {\"status\":\"ok\"} (application/json)", resp.StatusCode, body, resp.Header.Get("Content-Type"))
	}
	if resp.Proto != proto {
		t.Fatalf("answered over %s, want %s", resp.Proto, proto)
	}
}

// TestHTTPSOverTCP requests the API over TCP with HTTP/1.1 and HTTP/2, on
// the port number of the UDP socket, and checks that every response
// points to HTTP/3 on that UDP port (Alt-Svc), and that TLS 1.2 is
// refused.
func TestHTTPSOverTCP(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	udpPort := srv.Daemon().Addr().(*net.UDPAddr).Port
	if a := srv.Daemon().HTTPAddr().(*net.TCPAddr); a.Port != udpPort || !a.IP.Equal(net.IPv4(127, 0, 0, 1)) {
		t.Fatalf("HTTPS on %v, want 127.0.0.1:%d", a, udpPort)
	}
	wantAltSvc := fmt.Sprintf(`h3=":%d"; ma=86400`, udpPort)
	for _, tt := range []struct {
		name  string
		alpn  string
		proto string
	}{
		{"HTTP/1.1", "http/1.1", "HTTP/1.1"},
		{"HTTP/2", "h2", "HTTP/2.0"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tr := &http.Transport{TLSClientConfig: httpTLS(t, srv, tt.alpn), ForceAttemptHTTP2: tt.alpn == "h2"}
			defer tr.CloseIdleConnections()
			hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			for _, path := range []string{"/v1/health", "/nothing/here"} {
				resp, err := hc.Get("https://" + srv.HTTPAddr + path)
				if err != nil {
					t.Fatal(err)
				}
				if got := resp.Header.Get("Alt-Svc"); got != wantAltSvc {
					t.Fatalf("%s: Alt-Svc %q, want %q", path, got, wantAltSvc)
				}
				if path == "/v1/health" {
					checkHealth(t, resp, tt.proto)
				} else {
					resp.Body.Close()
					if resp.StatusCode != http.StatusNotFound {
						t.Fatalf("%s: %d, want 404", path, resp.StatusCode)
					}
				}
			}
		})
	}
	t.Run("TLS 1.2", func(t *testing.T) {
		tc := httpTLS(t, srv, "http/1.1")
		tc.MaxVersion = tls.VersionTLS12
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", srv.HTTPAddr, tc)
		if err == nil {
			conn.Close()
			t.Fatal("TLS 1.2 handshake accepted")
		}
	})
}

// TestHTTP3BesideDevices serves the API over HTTP/3 on the daemon's UDP
// socket while two devices chat on it, and checks that neither disturbs
// the other.
func TestHTTP3BesideDevices(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	tr := &http3.Transport{TLSClientConfig: httpTLS(t, srv), QUICConfig: &quic.Config{MaxIdleTimeout: 10 * time.Second}}
	defer tr.Close()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	get := func() error {
		resp, err := hc.Get("https://" + srv.Addr + "/v1/health")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK || resp.Proto != "HTTP/3.0" {
			return fmt.Errorf("%d over %s", resp.StatusCode, resp.Proto)
		}
		return nil
	}
	resp, err := hc.Get("https://" + srv.Addr + "/v1/health")
	if err != nil {
		t.Fatal(err)
	}
	checkHealth(t, resp, "HTTP/3.0")

	alice := testserver.Dial(t, srv.ClientConfig("alice", "phone"))
	bob := testserver.Dial(t, srv.ClientConfig("bob", "phone"))
	stop := make(chan struct{})
	var (
		wg       sync.WaitGroup
		requests int
		getErr   error
	)
	wg.Go(func() {
		for range 200 {
			select {
			case <-stop:
				return
			default:
			}
			if getErr = get(); getErr != nil {
				return
			}
			requests++
		}
	})
	const n = 20
	for i := range n {
		if _, err := alice.Send(t.Context(), client.ToUser("bob"), client.Outgoing{Text: fmt.Sprint(i)}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	for i := range n {
		select {
		case m := <-bob.Messages():
			if client.Text(m) != fmt.Sprint(i) {
				t.Fatalf("bob got %q, want %q", client.Text(m), fmt.Sprint(i))
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("bob got %d messages of %d", i, n)
		}
	}
	close(stop)
	wg.Wait()
	if getErr != nil {
		t.Fatalf("HTTP/3 request %d: %v", requests+1, getErr)
	}
	t.Logf("%d HTTP/3 requests during the chat", requests)
}

// TestShutdownEndsHTTP checks that Shutdown ends open HTTP/3 and HTTPS
// connections and returns at once when they are idle.
func TestShutdownEndsHTTP(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	qc, err := quic.DialAddr(ctx, srv.Addr, httpTLS(t, srv, http3.NextProtoH3), &quic.Config{MaxIdleTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer qc.CloseWithError(0, "")
	h3 := (&http3.Transport{}).NewClientConn(qc)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://localhost/v1/health", nil)
	resp, err := h3.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	checkHealth(t, resp, "HTTP/3.0")

	// An HTTP/1.1 connection, idle after a request.
	tcp, err := tls.Dial("tcp", srv.HTTPAddr, httpTLS(t, srv, "http/1.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	io.WriteString(tcp, "GET /v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
	br := bufio.NewReader(tcp)
	resp, err = http.ReadResponse(br, req)
	if err != nil {
		t.Fatal(err)
	}
	checkHealth(t, resp, "HTTP/1.1")

	start := time.Now()
	srv.Shutdown() // fails the test on error
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Shutdown took %v with idle HTTP connections", took)
	}
	select {
	case <-qc.Context().Done():
	case <-time.After(5 * time.Second):
		t.Error("the HTTP/3 connection is still open after Shutdown")
	}
	tcp.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, br); err != nil {
		t.Errorf("the HTTPS connection did not end after Shutdown: %v", err)
	}
}

// TestNoHTTP starts a server with the HTTP API off: it neither offers h3
// nor listens on TCP.
func TestNoHTTP(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{NoHTTP: true})
	if a := srv.Daemon().HTTPAddr(); a != nil || srv.HTTPAddr != "" {
		t.Fatalf("HTTPAddr %v with NoHTTP", a)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if qc, err := quic.DialAddr(ctx, srv.Addr, httpTLS(t, srv, http3.NextProtoH3), nil); err == nil {
		qc.CloseWithError(0, "")
		t.Fatal("HTTP/3 offered with NoHTTP")
	}
	ln, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		t.Fatalf("the TCP port is taken with NoHTTP: %v", err)
	}
	ln.Close()
	testserver.Dial(t, srv.ClientConfig("alice", "phone"))
}

// TestHTTPPortTaken checks that a server told to listen on a port whose
// TCP side is taken does not start, and says why.
func TestHTTPPortTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d, err := daemon.Start(daemon.Config{Listen: ln.Addr().String(), DataDir: t.TempDir(), NoSync: true})
	if err == nil {
		d.Close()
		t.Fatal("started on a taken TCP port")
	}
	if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), "HTTPS on TCP") {
		t.Fatalf("start on a taken TCP port: %v", err)
	}
}

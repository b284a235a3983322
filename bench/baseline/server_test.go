package baseline

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"go.uber.org/goleak"

	"github.com/qim-im/qim/certs"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testServer is a baseline server on 127.0.0.1 and the TLS configuration
// its clients use.
type testServer struct {
	*Server
	addr      string
	clientTLS *tls.Config
}

// startServer starts a baseline server with a fresh CA and certificate,
// and closes it when the test ends. setup, if not nil, is called before
// Serve.
func startServer(t *testing.T, setup func(*Server)) *testServer {
	t.Helper()
	serverTLS, clientTLS := testTLS(t)
	srv, err := Listen("127.0.0.1:0", serverTLS)
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(srv)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background()) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return &testServer{Server: srv, addr: srv.Addr().String(), clientTLS: clientTLS}
}

// testTLS generates a CA and a server certificate in a temporary
// directory and returns the server's and the clients' TLS configurations.
func testTLS(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	dir := t.TempDir()
	if err := certs.Generate(dir, nil); err != nil {
		t.Fatal(err)
	}
	server, err := certs.LoadServerTLS(filepath.Join(dir, certs.ServerCertFile), filepath.Join(dir, certs.ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	client, err = certs.ClientTLS(filepath.Join(dir, certs.CACertFile), false, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	return server, client
}

// testContext returns a context that ends with the test, or after 10
// seconds.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// dialStream connects to ts and opens a stream.
func dialStream(t *testing.T, ts *testServer) *quic.Stream {
	t.Helper()
	qc, err := quic.DialAddr(testContext(t), ts.addr, clientTLS(ts.clientTLS), clientQUICConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qc.CloseWithError(0, "") })
	str, err := qc.OpenStreamSync(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	return str
}

// eventually polls cond until it holds, failing the test after 5 seconds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestEchoReturnsTheBytesSent(t *testing.T) {
	ts := startServer(t, nil)
	str := dialStream(t, ts)
	var sent []byte
	sent = append(sent, modeEcho)
	for _, size := range []int{0, 1, 100, 127, 128, 16 << 10, maxFrame} {
		body := make([]byte, size)
		for i := range body {
			body[i] = byte(i * 7)
		}
		sent = appendFrame(sent, body)
	}
	// Written in pieces that split frames and length prefixes.
	for rest := sent; len(rest) > 0; {
		n := min(len(rest), 999)
		if _, err := str.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	str.Close()
	back, err := io.ReadAll(str)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back, sent[1:]) {
		t.Fatalf("echoed %d bytes, want the %d sent", len(back), len(sent)-1)
	}
}

func TestBadModeClosesTheConnection(t *testing.T) {
	ts := startServer(t, nil)
	str := dialStream(t, ts)
	if _, err := str.Write([]byte{'X'}); err != nil {
		t.Fatal(err)
	}
	_, err := io.ReadAll(str)
	var appErr *quic.ApplicationError
	if !errors.As(err, &appErr) || appErr.ErrorCode != codeProtocol || !appErr.Remote {
		t.Fatalf("read: %v, want the server's close with code %d", err, codeProtocol)
	}
}

func TestHelloThenWaitForTheClient(t *testing.T) {
	ts := startServer(t, nil)
	str := dialStream(t, ts)
	if _, err := str.Write(appendFrame([]byte{modeHello}, []byte("hi there"))); err != nil {
		t.Fatal(err)
	}
	back, err := readFrame(bufio.NewReader(str), nil)
	if err != nil || string(back) != "hi there" {
		t.Fatalf("hello answered %q, %v", back, err)
	}
	if got := ts.Stats(); got.Hellos != 1 || got.Open != 1 {
		t.Fatalf("stats %+v, want 1 hello and the connection open", got)
	}
}

func TestIdleConnsAreHeldUntilClosed(t *testing.T) {
	ts := startServer(t, nil)
	idle, err := Idle(testContext(t), ts.addr, ts.clientTLS, 50)
	if err != nil {
		t.Fatal(err)
	}
	if got := ts.Stats(); got.Idle != 50 || got.Open != 50 {
		idle.Close()
		t.Fatalf("server holds %+v, want 50 idle connections", got)
	}
	idle.Close()
	eventually(t, "the server to see the connections closed", func() bool {
		s := ts.Stats()
		return s.Idle == 0 && s.Open == 0
	})
}

func TestCloseEndsEveryConnection(t *testing.T) {
	serverTLS, clientTLS := testTLS(t)
	srv, err := Listen("127.0.0.1:0", serverTLS)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	idle, err := Idle(testContext(t), srv.Addr().String(), clientTLS, 5)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	cancel()
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve returned %v, want ErrServerClosed", err)
	}
	if got := srv.Stats(); got.Open != 0 || got.Idle != 0 {
		t.Fatalf("after Serve returned: %+v", got)
	}
}

func TestRunServesQUICAndMetrics(t *testing.T) {
	serverTLS, clientTLS := testTLS(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	type addrs struct{ quic, metrics net.Addr }
	ready := make(chan addrs, 1)
	ran := make(chan error, 1)
	go func() {
		ran <- Run(ctx, "127.0.0.1:0", "127.0.0.1:0", serverTLS, func(q, m net.Addr) { ready <- addrs{q, m} })
	}()
	var a addrs
	select {
	case a = <-ready:
	case err := <-ran:
		t.Fatalf("Run: %v", err)
	}
	res, err := Handshakes(testContext(t), a.quic.String(), clientTLS, HandshakeOptions{Duration: 50 * time.Millisecond})
	if err != nil || res.Count == 0 {
		t.Fatalf("handshakes: %+v, %v", res, err)
	}
	resp, err := http.Get("http://" + a.metrics.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cancel()
	if err := <-ran; err != nil {
		t.Fatalf("Run returned %v after its context ended, want nil", err)
	}
}

func TestMetricsHandler(t *testing.T) {
	hs := httptest.NewServer(MetricsHandler())
	defer hs.Close()
	get := func(path string) string {
		t.Helper()
		resp, err := http.Get(hs.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s, %v", path, resp.Status, err)
		}
		return string(body)
	}
	metrics := get("/metrics")
	for _, name := range []string{"process_cpu_seconds_total", "process_resident_memory_bytes", "go_memstats_heap_alloc_bytes"} {
		if !strings.Contains(metrics, "\n"+name+" ") {
			t.Errorf("/metrics has no %s", name)
		}
	}
	if heap := get("/debug/pprof/heap?gc=1"); heap == "" {
		t.Error("empty heap profile")
	}
	if index := get("/debug/pprof/"); !strings.Contains(index, "goroutine") {
		t.Error("the pprof index lists no goroutine profile")
	}
}

// remoteIPs records the client addresses of the frames a server echoes.
type remoteIPs struct {
	mu  sync.Mutex
	ips []string
}

func (r *remoteIPs) add(a net.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ips = append(r.ips, a.(*net.UDPAddr).IP.String())
}

func (r *remoteIPs) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.ips...)
}

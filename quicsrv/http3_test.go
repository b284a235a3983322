package quicsrv_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/qim-im/qim/certs"
	"github.com/qim-im/qim/daemon"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/quicsrv"
)

// h3Server is a quicsrv.Server with HTTP3 set, serving on its own socket
// the devices of a test server (whose daemon serves on another).
type h3Server struct {
	t    *testing.T
	ts   *testserver.Server
	srv  *quicsrv.Server
	addr string
	// release ends the requests to /block.
	release chan struct{}
	// blocked counts the requests that reached /block; blockEnded those
	// that left it, and how (true: their context ended).
	blocked    atomic.Int32
	blockEnded chan bool
	// early records, for each request to /early, whether it reached the
	// handler before the TLS handshake completed (0-RTT).
	early chan bool
	// served is Serve's result.
	served chan error
}

// startH3 starts a quicsrv.Server with an HTTP/3 handler on 127.0.0.1,
// serving the devices of a new test server, with the Server's fields set
// by configure, and closes it when the test ends.
func startH3(t *testing.T, configure func(*quicsrv.Server)) *h3Server {
	t.Helper()
	ts := testserver.Start(t, testserver.Options{NoHTTP: true})
	dir := daemon.CertsDir(ts.DataDir)
	tlsConf, err := certs.LoadServerTLS(filepath.Join(dir, certs.ServerCertFile), filepath.Join(dir, certs.ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	s := &h3Server{t: t, ts: ts, release: make(chan struct{}), blockEnded: make(chan bool, 10), early: make(chan bool, 10), served: make(chan error, 1)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") })
	mux.HandleFunc("GET /early", func(w http.ResponseWriter, r *http.Request) {
		s.early <- !r.TLS.HandshakeComplete
		io.WriteString(w, "early")
	})
	mux.HandleFunc("GET /block", func(w http.ResponseWriter, r *http.Request) {
		s.blocked.Add(1)
		select {
		case <-s.release:
			s.blockEnded <- false
			io.WriteString(w, "released")
		case <-r.Context().Done():
			s.blockEnded <- true
		}
	})
	s.srv = &quicsrv.Server{TLSConfig: tlsConf, Devices: ts.Daemon().Devices(), HTTP3: &http3.Server{Handler: mux}}
	if configure != nil {
		configure(s.srv)
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s.addr = pc.LocalAddr().String()
	go func() { s.served <- s.srv.Serve(pc) }()
	t.Cleanup(func() {
		s.srv.Close()
		<-s.served
		s.served <- quicsrv.ErrServerClosed
		pc.Close()
	})
	return s
}

// clientTLS returns a client TLS configuration that trusts the server and
// offers protos.
func clientTLS(t *testing.T, ts *testserver.Server, protos ...string) *tls.Config {
	t.Helper()
	c := ts.ClientTLS()
	c.NextProtos = protos
	return c
}

// h3Conn is an HTTP/3 client connection.
type h3Conn struct {
	qc *quic.Conn
	cc *http3.ClientConn
}

// dialH3 opens an HTTP/3 connection to addr with tc, and closes it when
// the test ends.
func dialH3(t *testing.T, addr string, tc *tls.Config) *h3Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	qc, err := quic.DialAddrEarly(ctx, addr, tc, &quic.Config{MaxIdleTimeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("dial HTTP/3: %v", err)
	}
	t.Cleanup(func() { qc.CloseWithError(0, "") })
	return &h3Conn{qc: qc, cc: (&http3.Transport{}).NewClientConn(qc)}
}

// get requests path on c and returns the response's status and body.
func (c *h3Conn) get(ctx context.Context, method, path string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, method, "https://localhost"+path, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := c.cc.RoundTrip(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.Proto != "HTTP/3.0" {
		return 0, "", errors.New("response over " + resp.Proto)
	}
	return resp.StatusCode, string(b), err
}

// mustGet requests path on c and checks that it is answered with want.
func (c *h3Conn) mustGet(t *testing.T, path, want string) {
	t.Helper()
	code, body, err := c.get(ctxTimeout(t), http.MethodGet, path)
	if err != nil || code != http.StatusOK || body != want {
		t.Fatalf("GET %s: %d %q %v, want 200 %q", path, code, body, err, want)
	}
}

// TestQIMRefusesUniStreams checks, on the daemon's server (which serves
// HTTP/3, so that peers may open unidirectional streams), that each
// unidirectional stream a qim device opens is stopped with
// PROTOCOL_VIOLATION, that the device may open more than the 3 at once
// the server allows (a refused stream gives its credit back), and that its
// session goes on.
func TestQIMRefusesUniStreams(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	c := dialRaw(t, srv)
	c.connect(srv, "alice")
	for i := range 5 {
		ctx := ctxTimeout(t)
		str, err := c.qc.OpenUniStreamSync(ctx)
		if err != nil {
			t.Fatalf("open unidirectional stream %d: %v", i, err)
		}
		str.Write([]byte("not qim"))
		select {
		case <-str.Context().Done():
		case <-ctx.Done():
			t.Fatalf("unidirectional stream %d not stopped", i)
		}
		var se *quic.StreamError
		if err := context.Cause(str.Context()); !errors.As(err, &se) || !se.Remote || qimpb.Code(se.ErrorCode) != qimpb.Code_PROTOCOL_VIOLATION {
			t.Fatalf("unidirectional stream %d ended with %v, want the server's PROTOCOL_VIOLATION", i, err)
		}
	}
	str, r := c.open()
	writeCmd(t, str, qimpb.CommandType_REQUEST, contactList(1))
	cmd, err := readCmd(t, r)
	if err != nil {
		t.Fatalf("the session ended: %v", err)
	}
	if resp := decodeResponse(t, cmd); resp.Code != 0 {
		t.Fatalf("got %v", resp)
	}
}

// TestHTTP3BesideQIM serves HTTP/3 and qim on one socket: each connection
// goes to its protocol, and a server without HTTP3 does not offer h3.
func TestHTTP3BesideQIM(t *testing.T) {
	s := startH3(t, nil)
	h := dialH3(t, s.addr, clientTLS(t, s.ts, http3.NextProtoH3))
	h.mustGet(t, "/hello", "hello")

	c := dialRawAddr(t, s.addr, s.ts.ClientTLS())
	c.connect(s.ts, "alice")
	h.mustGet(t, "/hello", "hello")

	// The test server's daemon has no HTTP3.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if qc, err := quic.DialAddr(ctx, s.ts.Addr, clientTLS(t, s.ts, http3.NextProtoH3), nil); err == nil {
		qc.CloseWithError(0, "")
		t.Fatal("a server without HTTP3 accepted ALPN h3")
	}
}

// TestHTTP3ConnBound checks that MaxHTTP3Conns bounds the HTTP/3
// connections (the one beyond is closed with H3_EXCESSIVE_LOAD), that a
// place freed serves a new one, and that HTTP/3 connections hold no place
// among the unauthenticated ones: with MaxUnauthenticated 1 and both
// HTTP/3 connections open, a device connects.
func TestHTTP3ConnBound(t *testing.T) {
	s := startH3(t, func(srv *quicsrv.Server) {
		srv.MaxHTTP3Conns = 2
		srv.MaxUnauthenticated = 1
	})
	tc := clientTLS(t, s.ts, http3.NextProtoH3)
	var open []*h3Conn
	for range 2 {
		h := dialH3(t, s.addr, tc)
		h.mustGet(t, "/hello", "hello")
		open = append(open, h)
	}

	over := dialH3(t, s.addr, tc)
	select {
	case <-over.qc.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a third HTTP/3 connection stayed open beyond MaxHTTP3Conns 2")
	}
	var ae *quic.ApplicationError
	if err := context.Cause(over.qc.Context()); !errors.As(err, &ae) || !ae.Remote || ae.ErrorCode != quic.ApplicationErrorCode(http3.ErrCodeExcessiveLoad) {
		t.Fatalf("the third HTTP/3 connection ended with %v, want H3_EXCESSIVE_LOAD", err)
	}

	c := dialRawAddr(t, s.addr, s.ts.ClientTLS())
	c.connect(s.ts, "alice")

	open[0].qc.CloseWithError(0, "")
	deadline := time.Now().Add(5 * time.Second)
	for {
		h := dialH3(t, s.addr, tc)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		code, _, err := h.get(ctx, http.MethodGet, "/hello")
		cancel()
		if err == nil && code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no HTTP/3 connection served after one closed: %v", err)
		}
		h.qc.CloseWithError(0, "")
		time.Sleep(20 * time.Millisecond)
	}
	open[1].mustGet(t, "/hello", "hello")
}

// TestHTTP3Stop stops a server while an HTTP/3 request is in flight:
// Shutdown lets it finish and returns once the client has closed the
// connection (after GOAWAY), or ends it when its context does; Close ends
// it at once. Serve returns ErrServerClosed in every case.
func TestHTTP3Stop(t *testing.T) {
	for _, tt := range []struct {
		name     string
		stop     func(*quicsrv.Server) error
		release  bool  // release the request during the stop
		wantErr  error // of stop
		canceled bool  // the request's context ended
	}{
		{"shutdown", func(srv *quicsrv.Server) error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return srv.Shutdown(ctx)
		}, true, nil, false},
		{"shutdown past its deadline", func(srv *quicsrv.Server) error {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			return srv.Shutdown(ctx)
		}, false, context.DeadlineExceeded, true},
		{"close", (*quicsrv.Server).Close, false, nil, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := startH3(t, nil)
			h := dialH3(t, s.addr, clientTLS(t, s.ts, http3.NextProtoH3))
			type result struct {
				code int
				body string
				err  error
			}
			done := make(chan result, 1)
			go func() {
				code, body, err := h.get(context.Background(), http.MethodGet, "/block")
				done <- result{code, body, err}
			}()
			for deadline := time.Now().Add(5 * time.Second); s.blocked.Load() == 0; time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the request did not reach the handler")
				}
			}

			stopped := make(chan error, 1)
			go func() { stopped <- tt.stop(s.srv) }()
			if tt.release {
				// Once the server is shutting down, a new request on
				// the connection is refused.
				for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
					ctx, cancel := context.WithTimeout(context.Background(), time.Second)
					_, _, err := h.get(ctx, http.MethodGet, "/hello")
					cancel()
					if err != nil {
						break
					}
					if time.Now().After(deadline) {
						t.Fatal("new requests still served during Shutdown")
					}
				}
				select {
				case err := <-stopped:
					t.Fatalf("Shutdown returned (%v) with a request in flight", err)
				case <-time.After(100 * time.Millisecond):
				}
				close(s.release)
			}
			select {
			case err := <-stopped:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("stop: %v, want %v", err, tt.wantErr)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the server did not stop")
			}
			select {
			case err := <-s.served:
				if !errors.Is(err, quicsrv.ErrServerClosed) {
					t.Fatalf("Serve: %v", err)
				}
				s.served <- err
			case <-time.After(5 * time.Second):
				t.Fatal("Serve did not return")
			}
			if canceled := <-s.blockEnded; canceled != tt.canceled {
				t.Fatalf("request context ended: %v, want %v", canceled, tt.canceled)
			}
			r := <-done
			if tt.release && (r.err != nil || r.body != "released") {
				t.Fatalf("request in flight: %d %q %v, want it answered", r.code, r.body, r.err)
			}
			if !tt.release && r.err == nil {
				t.Fatalf("request in flight answered %d %q", r.code, r.body)
			}
			select {
			case <-h.qc.Context().Done():
			case <-time.After(5 * time.Second):
				t.Fatal("the HTTP/3 connection is still open")
			}
		})
	}
}

// TestHTTP3EarlyData sends a request in 0-RTT on a resumed connection,
// through a relay that delays the client's packets, so that the request
// reaches the handler before the handshake has completed: it is served,
// and the handler can tell (r.TLS.HandshakeComplete is false), which
// daemon's tooEarly relies on.
func TestHTTP3EarlyData(t *testing.T) {
	s := startH3(t, nil)
	tc := clientTLS(t, s.ts, http3.NextProtoH3)
	tc.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	first := dialH3(t, s.addr, tc)
	first.mustGet(t, "/early", "early")
	if <-s.early {
		t.Fatal("a request before any session ticket counted as early")
	}
	first.qc.CloseWithError(0, "")

	relay := startRelay(t, s.addr, 100*time.Millisecond)
	h := dialH3(t, relay, tc)
	code, body, err := h.get(ctxTimeout(t), http3.MethodGet0RTT, "/early")
	if err != nil || code != http.StatusOK || body != "early" {
		t.Fatalf("0-RTT GET: %d %q %v", code, body, err)
	}
	if !h.qc.ConnectionState().Used0RTT {
		t.Fatal("the server did not accept 0-RTT")
	}
	if !<-s.early {
		t.Fatal("the 0-RTT request reached the handler after the handshake")
	}
}

// startRelay relays UDP datagrams between one client and server,
// delaying those from the client by delay, until the test ends. It
// returns the address the client sends to.
func startRelay(t *testing.T, server string, delay time.Duration) string {
	t.Helper()
	front, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	raddr, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		t.Fatal(err)
	}
	back, err := net.DialUDP("udp", nil, raddr)
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		client net.Addr // guarded by mu
	)
	wg.Go(func() {
		var timers sync.WaitGroup
		defer timers.Wait()
		for {
			b := make([]byte, 1500)
			n, from, err := front.ReadFrom(b)
			if err != nil {
				return
			}
			mu.Lock()
			client = from
			mu.Unlock()
			timers.Go(func() {
				time.Sleep(delay)
				back.Write(b[:n])
			})
		}
	})
	wg.Go(func() {
		b := make([]byte, 1500)
		for {
			n, err := back.Read(b)
			if err != nil {
				return
			}
			mu.Lock()
			to := client
			mu.Unlock()
			if to != nil {
				front.WriteTo(b[:n], to)
			}
		}
	})
	t.Cleanup(func() {
		front.Close()
		back.Close()
		wg.Wait()
	})
	return front.LocalAddr().String()
}

package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/quic-go/quic-go/http3"
	"golang.org/x/net/netutil"
)

// The HTTP API (httpHandler) is served on the port of the QUIC server, three
// ways: qim itself is QUIC with ALPN "qim/1"; HTTP/3 shares that QUIC
// listener (ALPN "h3", quicsrv.Server.HTTP3); and HTTPS over TCP, on the
// same IP address and port number, serves HTTP/1.1 and HTTP/2 over TLS 1.3
// to clients without QUIC, with an Alt-Svc header that points them to
// HTTP/3.
const (
	// httpReadHeaderTimeout bounds the time a TCP client has to send a
	// request's headers.
	httpReadHeaderTimeout = 10 * time.Second
	// httpIdleTimeout is how long an idle HTTP connection (TCP or HTTP/3)
	// stays open.
	httpIdleTimeout = 2 * time.Minute
	// httpMaxHeaderBytes bounds a request's headers (HTTP/1.1 and HTTP/2:
	// the request line and headers; HTTP/3: the HEADERS frame).
	httpMaxHeaderBytes = 64 << 10
	// httpMaxConns bounds the HTTPS connections open at once.
	httpMaxConns = 10000
	// altSvcMaxAge is how long, in seconds, a client may remember that
	// HTTP/3 is served (the Alt-Svc header's ma).
	altSvcMaxAge = 86400
	// listenAttempts is how many UDP and TCP port pairs listen tries when
	// Config.Listen asks for any free port.
	listenAttempts = 10
)

// webServer is the daemon's HTTPS server on TCP. HTTP/3 is served by the
// QUIC server, with the http3.Server startWeb returns.
type webServer struct {
	// Set by listen and startWeb; srv is cleared by closeWeb. Used by the
	// goroutine that starts and stops the daemon only.
	ln   net.Listener  // TCP, on the UDP socket's IP address and port
	addr net.Addr      // ln's address, kept after close
	srv  *http.Server  // nil until startWeb, and again after closeWeb
	done chan struct{} // closed when srv.ServeTLS returns
}

// listen opens the server's sockets: the UDP socket (Config.PacketConn, or
// a new one on Config.Listen) and, unless Config.NoHTTP, a TCP listener on
// its IP address and port for HTTPS. When Config.Listen asks for any free
// port (port 0) and the UDP socket's port is taken on TCP, it tries
// another pair, up to listenAttempts times. On error, closeParts closes
// what it opened.
func (d *Daemon) listen() error {
	if d.pc = d.cfg.PacketConn; d.pc != nil {
		return d.listenTCP()
	}
	udpAddr, err := net.ResolveUDPAddr("udp", d.cfg.Listen)
	if err != nil {
		return fmt.Errorf("daemon: listen address: %w", err)
	}
	for attempt := 1; ; attempt++ {
		uc, err := net.ListenUDP("udp", udpAddr)
		if err != nil {
			return fmt.Errorf("daemon: listen: %w", err)
		}
		d.pc = uc // not assigned on error: a nil *UDPConn in d.pc is not nil
		err = d.listenTCP()
		if err == nil || udpAddr.Port != 0 || attempt == listenAttempts {
			return err
		}
		uc.Close()
		d.pc = nil
	}
}

// listenTCP listens on TCP at d.pc's address for HTTPS, unless
// Config.NoHTTP.
func (d *Daemon) listenTCP() error {
	if d.cfg.NoHTTP {
		return nil
	}
	ln, err := net.Listen("tcp", d.pc.LocalAddr().String())
	if err != nil {
		return fmt.Errorf("daemon: listen for HTTPS on TCP: %w", err)
	}
	d.web = &webServer{ln: ln, addr: ln.Addr()}
	return nil
}

// startWeb starts serving the HTTP API over HTTPS on the TCP listener, in
// a goroutine that closeWeb waits for, and returns the HTTP/3 server for
// the QUIC server to serve it with. It returns nil with Config.NoHTTP.
// tlsConf is the QUIC server's TLS configuration, which it copies.
func (d *Daemon) startWeb(tlsConf *tls.Config) *http3.Server {
	if d.web == nil {
		return nil
	}
	handler := tooEarly(d.httpHandler())
	// The TCP port is the UDP socket's (listenTCP).
	altSvc := fmt.Sprintf(`%s=":%d"; ma=%d`, http3.NextProtoH3, d.web.addr.(*net.TCPAddr).Port, altSvcMaxAge)

	tcpTLS := tlsConf.Clone()
	tcpTLS.NextProtos = []string{"h2", "http/1.1"}
	tcpTLS.MinVersion = tls.VersionTLS13
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	d.web.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Alt-Svc", altSvc)
			handler.ServeHTTP(w, r)
		}),
		TLSConfig:         tcpTLS,
		Protocols:         &protocols,
		ReadHeaderTimeout: httpReadHeaderTimeout,
		IdleTimeout:       httpIdleTimeout,
		MaxHeaderBytes:    httpMaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(httpErrorLog{d.logger.Handler()}, slog.LevelWarn),
	}
	d.web.done = make(chan struct{})
	// At most httpMaxConns connections at once, like HTTP/3
	// (quicsrv.Server.MaxHTTP3Conns): beyond, new ones wait in the
	// kernel's accept queue.
	srv, ln, done := d.web.srv, netutil.LimitListener(d.web.ln, httpMaxConns), d.web.done
	go func() {
		defer close(done)
		if err := srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
			d.logger.Error("HTTPS server stopped; the HTTP API is served over HTTP/3 only", "err", err)
		}
	}()
	d.logger.Info("serving the HTTP API", "url", "https://"+d.web.addr.String()+"/", "alt-svc", altSvc)
	return &http3.Server{
		Handler:        handler,
		IdleTimeout:    httpIdleTimeout,
		MaxHeaderBytes: httpMaxHeaderBytes,
		Logger:         d.logger,
	}
}

// shutdownWeb starts shutting the HTTPS server down gracefully (http.Server
// Shutdown) and returns a function that waits for it and returns its
// error. HTTP/3 is shut down with the QUIC server.
func (d *Daemon) shutdownWeb(ctx context.Context) (wait func() error) {
	if d.web == nil || d.web.srv == nil {
		return func() error { return nil }
	}
	errc := make(chan error, 1)
	srv := d.web.srv
	go func() { errc <- srv.Shutdown(ctx) }()
	return func() error { return <-errc }
}

// closeWeb closes the HTTPS server and its connections, or its listener if
// it was not serving yet. It is part of closeParts.
func (d *Daemon) closeWeb() {
	if d.web == nil {
		return
	}
	if d.web.srv != nil {
		d.web.srv.Close()
		<-d.web.done
		d.web.srv = nil
	}
	d.web.ln.Close() // ServeTLS closed it already, unless it never ran
}

// HTTPAddr returns the TCP address the HTTP API is served on over HTTPS,
// or nil with Config.NoHTTP. HTTP/3 is served on Addr, the same IP address
// and port over UDP.
func (d *Daemon) HTTPAddr() net.Addr {
	if d.web == nil {
		return nil
	}
	return d.web.addr
}

// tooEarly answers 425 Too Early (RFC 8470) to a request that arrived in
// 0-RTT early data, which an attacker can replay, unless its method is
// safe (GET, HEAD, OPTIONS): the client sends it again once the handshake
// is complete. Only HTTP/3 requests can arrive so (r.TLS.HandshakeComplete
// is false then); over TCP the server does not accept early data.
func tooEarly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil && !r.TLS.HandshakeComplete {
			switch r.Method {
			case http.MethodGet, http.MethodHead, http.MethodOptions:
			default:
				http.Error(w, "request sent in 0-RTT early data: send it again", http.StatusTooEarly)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// httpErrorLog is the slog.Handler behind the HTTPS server's ErrorLog: it
// logs failed TLS handshakes, which any scanner of the port causes, at
// debug level, and the rest as given.
type httpErrorLog struct{ slog.Handler }

func (h httpErrorLog) Handle(ctx context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "TLS handshake error") {
		if !h.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		r.Level = slog.LevelDebug
	}
	return h.Handler.Handle(ctx, r)
}

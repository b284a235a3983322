package udprelay

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/qim-im/qim/certs"
)

// quicEcho is a QUIC server on 127.0.0.1:0 that echoes every stream.
type quicEcho struct {
	ln *quic.Listener

	mu    sync.Mutex // guards conns
	conns []*quic.Conn
}

// startQUICEcho starts a quicEcho that stops when the test ends, and returns
// it with a client TLS config that trusts it.
func startQUICEcho(t *testing.T) (*quicEcho, *tls.Config) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "certs")
	if err := certs.Generate(dir, nil); err != nil {
		t.Fatal(err)
	}
	serverTLS, err := certs.LoadServerTLS(filepath.Join(dir, certs.ServerCertFile), filepath.Join(dir, certs.ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	clientTLS, err := certs.ClientTLS(filepath.Join(dir, certs.CACertFile), false, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := quic.ListenAddr("127.0.0.1:0", serverTLS, quicConfig())
	if err != nil {
		t.Fatal(err)
	}
	s := &quicEcho{ln: ln}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, conn)
			s.mu.Unlock()
			wg.Go(func() { serveEcho(conn) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.CloseWithError(0, "")
		}
		s.mu.Unlock()
		wg.Wait()
	})
	return s, clientTLS
}

// serveEcho echoes each stream of conn until conn ends. It returns once its
// streams are done.
func serveEcho(conn *quic.Conn) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		str, err := conn.AcceptStream(context.Background())
		if err != nil {
			return
		}
		wg.Go(func() {
			io.Copy(str, str)
			str.Close()
		})
	}
}

// conn returns the server side of the only connection.
func (s *quicEcho) conn(t *testing.T) *quic.Conn {
	t.Helper()
	var c *quic.Conn
	eventually(t, "the server to accept the connection", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(s.conns) == 1 {
			c = s.conns[0]
		}
		return c != nil
	})
	return c
}

func quicConfig() *quic.Config {
	return &quic.Config{
		MaxIdleTimeout:       30 * time.Second,
		HandshakeIdleTimeout: 30 * time.Second,
	}
}

// dialQUIC connects to addr and opens one stream, closing both when the test
// ends.
func dialQUIC(t *testing.T, ctx context.Context, addr string, tlsConf *tls.Config) (*quic.Conn, *quic.Stream) {
	t.Helper()
	conn, err := quic.DialAddr(ctx, addr, tlsConf, quicConfig())
	if err != nil {
		t.Fatalf("dial through relay: %v", err)
	}
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatalf("open stream: %v", err)
	}
	return conn, str
}

// echoMessages sends n numbered messages on str and checks each echo.
func echoMessages(t *testing.T, str *quic.Stream, from, n int) {
	t.Helper()
	str.SetDeadline(time.Now().Add(30 * time.Second))
	for i := from; i < from+n; i++ {
		msg := fmt.Sprintf("message %04d", i)
		if _, err := io.WriteString(str, msg); err != nil {
			t.Fatalf("write %q: %v", msg, err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(str, buf); err != nil {
			t.Fatalf("read echo of %q: %v", msg, err)
		}
		if string(buf) != msg {
			t.Fatalf("echo %q, want %q", buf, msg)
		}
	}
}

func TestQUICThroughLossyLink(t *testing.T) {
	srv, clientTLS := startQUICEcho(t)
	r := startRelay(t, Config{
		Target: srv.ln.Addr().String(),
		Delay:  10 * time.Millisecond,
		Loss:   0.05,
		Seed:   42,
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, str := dialQUIC(t, ctx, r.Addr(), clientTLS)
	echoMessages(t, str, 0, 100)
	st := r.Stats()
	if st.ClientToServer.Dropped+st.ServerToClient.Dropped == 0 {
		t.Errorf("stats %+v, want some datagrams dropped", st)
	}
}

func TestQUICSurvivesRebind(t *testing.T) {
	srv, clientTLS := startQUICEcho(t)
	r := startRelay(t, Config{Target: srv.ln.Addr().String(), Delay: 5 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, str := dialQUIC(t, ctx, r.Addr(), clientTLS)
	echoMessages(t, str, 0, 10)
	serverSide := srv.conn(t)
	before := serverSide.RemoteAddr().String()

	for round := range 3 {
		if err := r.Rebind(); err != nil {
			t.Fatal(err)
		}
		echoMessages(t, str, 10*(round+1), 10)
	}
	eventually(t, "the server to move to the new path", func() bool {
		return serverSide.RemoteAddr().String() != before
	})
	if serverSide.Context().Err() != nil {
		t.Fatalf("server connection ended: %v", context.Cause(serverSide.Context()))
	}
}

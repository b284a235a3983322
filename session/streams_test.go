package session

import (
	"bufio"
	"context"
	"errors"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/certs"
	"github.com/qim-im/qim/core"
	qimpb "github.com/qim-im/qim/proto"
)

// quicConn is the Conn of a session served straight on a QUIC connection,
// with no control stream: every stream is a conversation stream.
type quicConn struct{ qc *quic.Conn }

func (c quicConn) OpenStream(ctx context.Context) (Stream, error) {
	str, err := c.qc.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	return quicStream{str}, nil
}

// quicStream is a QUIC stream as a Stream (quicsrv has the same adapter).
type quicStream struct{ *quic.Stream }

func (s quicStream) CancelRead(code qimpb.Code) { s.Stream.CancelRead(quic.StreamErrorCode(code)) }

func (c quicConn) Disconnect(code qimpb.Code, reason string) {
	c.qc.CloseWithError(quic.ApplicationErrorCode(code), reason)
}

func (c quicConn) HandshakeComplete() <-chan struct{} { return c.qc.HandshakeComplete() }

// streamRig is a hub whose sessions are served on real QUIC connections
// from raw devices the test drives.
type streamRig struct {
	t    *testing.T
	dev  *Devices
	ln   *quic.Listener
	dial func(ctx context.Context) (*quic.Conn, error)
}

func newStreamRig(t *testing.T, cfg Config) *streamRig {
	t.Helper()
	dir := t.TempDir()
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
	d := newDevices(t, cfg, core.Config{SendRate: -1})
	qconf := &quic.Config{MaxIncomingStreams: 1000, MaxIncomingUniStreams: -1}
	ln, err := quic.ListenAddr("127.0.0.1:0", serverTLS, qconf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	addr := ln.Addr().String()
	return &streamRig{t: t, dev: d, ln: ln, dial: func(ctx context.Context) (*quic.Conn, error) {
		return quic.DialAddr(ctx, addr, clientTLS, qconf)
	}}
}

// device connects user's device and returns the device's side of the
// connection. The session and the server's goroutines end with the test.
func (r *streamRig) device(user string) *quic.Conn {
	t := r.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dc, err := r.dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := r.ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s, err := r.dev.Open(ctx, "app", &qimpb.Connect{User: user, Device: "phone"}, quicConn{sc}, nil)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		for {
			str, err := sc.AcceptStream(sc.Context())
			if err != nil {
				return
			}
			s.HandleStream(quicStream{str})
		}
	}()
	t.Cleanup(func() {
		dc.CloseWithError(0, "")
		sc.CloseWithError(0, "")
		<-served
		s.Close()
	})
	return dc
}

// send writes a MESSAGE from the device on str and reads its answer.
func send(t *testing.T, str *quic.Stream, r *bufio.Reader, id uint64, to string) {
	t.Helper()
	payload, _ := proto.Marshal(&qimpb.MessageTxt{Txt: "hi"})
	frame, err := qimpb.AppendRequestFrame(nil, qimpb.RequestType_MESSAGE, id, &qimpb.Message{ToUser: to, Payload: payload})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := str.Write(frame); err != nil {
		t.Fatal(err)
	}
	var cmd qimpb.Command
	var resp qimpb.Response
	if _, err := qimpb.ReadFrame(r, 1<<20, nil, &cmd); err != nil {
		t.Fatal(err)
	}
	if proto.Unmarshal(cmd.Payload, &resp) != nil || resp.Code != 0 || resp.RequestId != id {
		t.Fatalf("answer %v", &cmd)
	}
}

// acceptPush accepts the stream the server opens to push one message,
// checks it comes from from, and acknowledges it.
func acceptPush(t *testing.T, dc *quic.Conn, from string) (*quic.Stream, *bufio.Reader) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	str, err := dc.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(str)
	var cmd qimpb.Command
	var req qimpb.Request
	var m qimpb.Message
	if _, err := qimpb.ReadFrame(r, 1<<20, nil, &cmd); err != nil {
		t.Fatal(err)
	}
	if proto.Unmarshal(cmd.Payload, &req) != nil || proto.Unmarshal(req.Payload, &m) != nil || m.FromUser != from {
		t.Fatalf("push %v, want one from %s", &cmd, from)
	}
	frame, _ := qimpb.EncodeFrame(qimpb.CommandType_RESPONSE, &qimpb.Response{RequestId: req.RequestId})
	if _, err := str.Write(frame); err != nil {
		t.Fatal(err)
	}
	return str, r
}

// finished waits until the server finishes str, checks it happened no
// sooner than after, and finishes the device's side.
func finished(t *testing.T, what string, str *quic.Stream, r *bufio.Reader, since time.Time, after time.Duration) {
	t.Helper()
	str.SetReadDeadline(time.Now().Add(10 * time.Second))
	var cmd qimpb.Command
	if _, err := qimpb.ReadFrame(r, 1<<20, nil, &cmd); !errors.Is(err, io.EOF) {
		t.Fatalf("%s: read %v, %v; want EOF", what, &cmd, err)
	}
	if d := time.Since(since); d < after {
		t.Errorf("%s finished after %v, before %v", what, d, after)
	}
	str.Close()
}

// TestServerEndsIdleStreams checks the server's stream cache: it finishes
// the least recently used idle stream it opened beyond its budget, streams
// it opened after StreamIdle, and streams the device opened after
// PeerStreamIdle, and pushes again on a new stream.
func TestServerEndsIdleStreams(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  Config
	}{
		{"budget", Config{PushStreams: 2, StreamIdle: time.Hour, PeerStreamIdle: time.Hour}},
		{"idle", Config{StreamIdle: 300 * time.Millisecond, PeerStreamIdle: 600 * time.Millisecond}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newStreamRig(t, tt.cfg)
			alice := r.device("alice")
			start := time.Now()
			own, err := alice.OpenStreamSync(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			ownR := bufio.NewReader(own)
			send(t, own, ownR, 1, "zoe") // a stream alice opened
			var pushes []*quic.Stream
			var readers []*bufio.Reader
			devs := make(map[string]*quic.Conn)
			for _, from := range []string{"bob", "carol", "dave"} {
				d := r.device(from)
				devs[from] = d
				str, err := d.OpenStreamSync(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				send(t, str, bufio.NewReader(str), 1, "alice")
				p, pr := acceptPush(t, alice, from) // a stream the server opened
				pushes, readers = append(pushes, p), append(readers, pr)
			}
			if tt.name == "budget" {
				// The third push stream took bob's place, the least
				// recently used; alice's own stream stays.
				finished(t, "bob's push stream", pushes[0], readers[0], start, 0)
				own.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
				if _, err := ownR.ReadByte(); !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
					t.Fatalf("alice's own stream: %v, want it open", err)
				}
				return
			}
			for i, from := range []string{"bob", "carol", "dave"} {
				finished(t, from+"'s push stream", pushes[i], readers[i], start, tt.cfg.StreamIdle)
			}
			finished(t, "alice's own stream", own, ownR, start, tt.cfg.PeerStreamIdle)
			// bob writes again: the server opens a new stream to push it.
			str, err := devs["bob"].OpenStreamSync(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			send(t, str, bufio.NewReader(str), 1, "alice")
			acceptPush(t, alice, "bob")
		})
	}
}

func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}

func (c quicConn) WriteEvent([]byte) error     { return nil }
func (c quicConn) Datagrams() bool             { return false }
func (c quicConn) SendDatagram(b []byte) error { return c.qc.SendDatagram(b) }

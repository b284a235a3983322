package quicsrv_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
)

// wireDevice is a device written from the protocol document alone, over
// plain quic-go, not the project's client library: it opens the control
// stream, writes the frames a test gives it, and records every frame the
// server sends on the control stream, how the stream ended, and the
// connection's close error.
type wireDevice struct {
	// Static after dialWire.
	t    *testing.T
	qc   *quic.Conn
	ctrl *quic.Stream
	done chan struct{} // closed when the control stream's reader returns

	mu      sync.Mutex
	frames  []*qimpb.Command // guarded by mu
	readErr error            // why reading the control stream ended; set before done is closed
}

// dialWire connects to srv, opens the control stream and starts recording
// what arrives on it. The connection is closed when the test ends.
func dialWire(t *testing.T, srv *testserver.Server) *wireDevice {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tc := srv.ClientTLS()
	tc.NextProtos = []string{"qim/1"}
	qc, err := quic.DialAddr(ctx, srv.Addr, tc, &quic.Config{MaxIdleTimeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	ctrl, err := qc.OpenStreamSync(ctx)
	if err != nil {
		t.Fatalf("open control stream: %v", err)
	}
	d := &wireDevice{t: t, qc: qc, ctrl: ctrl, done: make(chan struct{})}
	go d.read()
	t.Cleanup(func() {
		qc.CloseWithError(0, "")
		<-d.done
	})
	return d
}

// read records the frames of the control stream until it ends. It runs in
// its own goroutine.
func (d *wireDevice) read() {
	defer close(d.done)
	r := bufio.NewReader(d.ctrl)
	for {
		var cmd qimpb.Command
		if _, err := qimpb.ReadFrame(r, 4<<20, nil, &cmd); err != nil {
			d.mu.Lock()
			d.readErr = err
			d.mu.Unlock()
			return
		}
		d.mu.Lock()
		d.frames = append(d.frames, &cmd)
		d.mu.Unlock()
	}
}

// write writes raw bytes on the control stream.
func (d *wireDevice) write(b []byte) {
	d.t.Helper()
	if _, err := d.ctrl.Write(b); err != nil {
		d.t.Fatalf("write: %v", err)
	}
}

// send writes one frame on the control stream.
func (d *wireDevice) send(ct qimpb.CommandType, m proto.Message) {
	d.t.Helper()
	frame, err := qimpb.EncodeFrame(ct, m)
	if err != nil {
		d.t.Fatal(err)
	}
	d.write(frame)
}

// connect authenticates the device as user's device "wire" and waits for
// the server's answer.
func (d *wireDevice) connect(srv *testserver.Server, user string) {
	d.t.Helper()
	d.send(qimpb.CommandType_CONNECT, &qimpb.Connect{Org: "demo", Appkey: "demo", User: user, Token: srv.Token(user), Device: "wire"})
	deadline := time.Now().Add(10 * time.Second)
	for {
		d.mu.Lock()
		var first *qimpb.Command
		if len(d.frames) > 0 {
			first = d.frames[0]
		}
		d.mu.Unlock()
		if first != nil {
			var resp qimpb.Response
			if first.Command != qimpb.CommandType_RESPONSE || proto.Unmarshal(first.Payload, &resp) != nil || resp.Code != 0 {
				d.t.Fatalf("CONNECT refused: %v", first)
			}
			return
		}
		select {
		case <-d.done:
			d.t.Fatalf("control stream ended before the CONNECT answer: %v", d.readErr)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.t.Fatal("no answer to CONNECT")
		}
	}
}

// expectDisconnect waits for the connection to end and checks, at the
// wire, that the server's last frame on the control stream was
// DISCONNECT{want}, that the server then finished the stream, and that the
// connection was closed by the server with the same application error
// code. A frame read from a stream was received before the CONNECTION_CLOSE:
// quic-go fails every read once the connection is closed.
func (d *wireDevice) expectDisconnect(want qimpb.Code) {
	d.t.Helper()
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		d.t.Fatal("control stream still open")
	}
	select {
	case <-d.qc.Context().Done():
	case <-time.After(10 * time.Second):
		d.t.Fatal("connection not closed by the server")
	}
	var ae *quic.ApplicationError
	if err := context.Cause(d.qc.Context()); !errors.As(err, &ae) || !ae.Remote {
		d.t.Fatalf("connection closed by %v, want a remote application error", err)
	}
	d.mu.Lock()
	frames, readErr := d.frames, d.readErr
	d.mu.Unlock()
	if len(frames) == 0 {
		d.t.Fatalf("no DISCONNECT before CONNECTION_CLOSE %v (stream ended with %v)", qimpb.Code(ae.ErrorCode), readErr)
	}
	last := frames[len(frames)-1]
	var dis qimpb.Disconnect
	if last.Command != qimpb.CommandType_DISCONNECT || proto.Unmarshal(last.Payload, &dis) != nil {
		d.t.Fatalf("last frame %v, want DISCONNECT", last)
	}
	if qimpb.Code(dis.Code) != want || dis.Reason == "" {
		d.t.Fatalf("DISCONNECT{%v, %q}, want code %v and a reason", qimpb.Code(dis.Code), dis.Reason, want)
	}
	if !errors.Is(readErr, io.EOF) {
		d.t.Errorf("control stream ended with %v after DISCONNECT, want its FIN", readErr)
	}
	if got := qimpb.Code(ae.ErrorCode); got != want {
		d.t.Fatalf("CONNECTION_CLOSE code %v, want %v", got, want)
	}
}

// TestDisconnectAtTheWire checks, for every way the server closes a
// connection that has a control stream, that the device receives
// DISCONNECT{code, reason} before the CONNECTION_CLOSE with that code.
func TestDisconnectAtTheWire(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{Apps: []string{"acme/chat"}})
	connect := func(d *wireDevice, c *qimpb.Connect) { d.send(qimpb.CommandType_CONNECT, c) }
	demo := func(user, token string) *qimpb.Connect {
		return &qimpb.Connect{Org: "demo", Appkey: "demo", User: user, Token: token, Device: "wire"}
	}
	withVersion := func(d *wireDevice, v int32) {
		payload, _ := proto.Marshal(demo("alice", srv.Token("alice")))
		frame, _ := qimpb.AppendFrame(nil, &qimpb.Command{Version: v, Command: qimpb.CommandType_CONNECT, Payload: payload})
		d.write(frame)
	}
	for _, tt := range []struct {
		name string
		want qimpb.Code
		// run makes the server close the connection of the device it
		// returns.
		run func(t *testing.T) *wireDevice
	}{
		{"bad token", qimpb.Code_UNAUTHENTICATED, func(t *testing.T) *wireDevice {
			d := dialWire(t, srv)
			connect(d, demo("alice", "v1.1.AAAA"))
			return d
		}},
		{"token of another application", qimpb.Code_UNAUTHENTICATED, func(t *testing.T) *wireDevice {
			d := dialWire(t, srv)
			connect(d, demo("alice", srv.TokenFor("acme", "chat", "alice", time.Hour)))
			return d
		}},
		{"token longer than 512 bytes", qimpb.Code_UNAUTHENTICATED, func(t *testing.T) *wireDevice {
			d := dialWire(t, srv)
			connect(d, demo("alice", srv.Token("alice")+strings.Repeat("A", 512)))
			return d
		}},
		{"expired token", qimpb.Code_TOKEN_EXPIRED, func(t *testing.T) *wireDevice {
			d := dialWire(t, srv)
			connect(d, demo("alice", srv.TokenFor("demo", "demo", "alice", -time.Minute)))
			return d
		}},
		{"bad user id", qimpb.Code_INVALID_ARGUMENT, func(t *testing.T) *wireDevice {
			d := dialWire(t, srv)
			connect(d, demo("a:b", "x"))
			return d
		}},
		{"version 2", qimpb.Code_UNSUPPORTED_VERSION, func(t *testing.T) *wireDevice {
			d := dialWire(t, srv)
			withVersion(d, 2)
			return d
		}},
		{"version 0", qimpb.Code_UNSUPPORTED_VERSION, func(t *testing.T) *wireDevice {
			d := dialWire(t, srv)
			withVersion(d, 0)
			return d
		}},
		{"request before connect", qimpb.Code_PROTOCOL_VIOLATION, func(t *testing.T) *wireDevice {
			d := dialWire(t, srv)
			d.send(qimpb.CommandType_REQUEST, &qimpb.Request{Type: qimpb.RequestType_CONTACT})
			return d
		}},
		{"connect twice", qimpb.Code_PROTOCOL_VIOLATION, func(t *testing.T) *wireDevice {
			d := dialWire(t, srv)
			d.connect(srv, "alice")
			connect(d, demo("alice", srv.Token("alice")))
			return d
		}},
		{"undecodable first frame", qimpb.Code_BAD_REQUEST, func(t *testing.T) *wireDevice {
			d := dialWire(t, srv)
			d.write([]byte{0x05, 0xff, 0xff, 0xff, 0xff, 0xff})
			return d
		}},
		{"undecodable Connect", qimpb.Code_BAD_REQUEST, func(t *testing.T) *wireDevice {
			d := dialWire(t, srv)
			frame, _ := qimpb.AppendFrame(nil, &qimpb.Command{Version: qimpb.Version, Command: qimpb.CommandType_CONNECT, Payload: []byte{0xff}})
			d.write(frame)
			return d
		}},
		{"undecodable frame after connect", qimpb.Code_BAD_REQUEST, func(t *testing.T) *wireDevice {
			d := dialWire(t, srv)
			d.connect(srv, "alice")
			d.write([]byte{0x05, 0xff, 0xff, 0xff, 0xff, 0xff})
			return d
		}},
		{"frame too large before connect", qimpb.Code_FRAME_TOO_LARGE, func(t *testing.T) *wireDevice {
			d := dialWire(t, srv)
			d.write([]byte{0xff, 0xff, 0xff, 0xff, 0x0f}) // 4 GiB declared
			return d
		}},
		{"frame too large after connect", qimpb.Code_FRAME_TOO_LARGE, func(t *testing.T) *wireDevice {
			d := dialWire(t, srv)
			d.connect(srv, "alice")
			d.write([]byte{0x80, 0x80, 0x40}) // 1 MiB declared
			return d
		}},
		{"auth timeout", qimpb.Code_AUTH_TIMEOUT, func(t *testing.T) *wireDevice {
			short := testserver.Start(t, testserver.Options{AuthTimeout: 300 * time.Millisecond})
			d := dialWire(t, short)
			d.write([]byte{0x10}) // a length, then nothing
			return d
		}},
		{"replaced", qimpb.Code_REPLACED, func(t *testing.T) *wireDevice {
			d := dialWire(t, srv)
			d.connect(srv, "carol")
			dialWire(t, srv).connect(srv, "carol")
			return d
		}},
		{"shutdown", qimpb.Code_GOING_AWAY, func(t *testing.T) *wireDevice {
			own := testserver.Start(t, testserver.Options{})
			d := dialWire(t, own)
			d.connect(own, "alice")
			own.Shutdown()
			return d
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(t).expectDisconnect(tt.want)
		})
	}
}

// TestClientDisconnectWait checks what PROTOCOL.md section 3.1 says of a
// device's DISCONNECT{CLOSED}: the server closes the connection with CLOSED
// at once when the device has finished its conversation streams, and waits
// up to 1 s for them otherwise, so that their last acknowledgements are
// recorded.
func TestClientDisconnectWait(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	for _, tt := range []struct {
		name     string
		finish   bool
		min, max time.Duration
	}{
		{"streams finished first", true, 0, 700 * time.Millisecond},
		{"a stream left open", false, 900 * time.Millisecond, 3 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := dialWire(t, srv)
			d.connect(srv, "dave")
			str, err := d.qc.OpenStream()
			if err != nil {
				t.Fatal(err)
			}
			frame, _ := qimpb.EncodeFrame(qimpb.CommandType_REQUEST, contactList(1))
			str.Write(frame)
			if _, err := readCmd(t, bufio.NewReader(str)); err != nil { // the answer: the stream is served
				t.Fatal(err)
			}
			if tt.finish {
				str.Close()
			}
			start := time.Now()
			d.send(qimpb.CommandType_DISCONNECT, &qimpb.Disconnect{Code: int32(qimpb.Code_CLOSED)})
			select {
			case <-d.qc.Context().Done():
			case <-time.After(10 * time.Second):
				t.Fatal("connection not closed")
			}
			took := time.Since(start)
			var ae *quic.ApplicationError
			if err := context.Cause(d.qc.Context()); !errors.As(err, &ae) || qimpb.Code(ae.ErrorCode) != qimpb.Code_CLOSED {
				t.Fatalf("closed with %v, want CLOSED", err)
			}
			t.Logf("closed %v after DISCONNECT", took.Round(time.Millisecond))
			if took < tt.min || took > tt.max {
				t.Fatalf("closed %v after DISCONNECT, want %v to %v", took, tt.min, tt.max)
			}
		})
	}
}

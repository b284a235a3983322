package client_test

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
	"github.com/qim-im/qim/client"
	qimpb "github.com/qim-im/qim/proto"
)

// fakeServer is a scripted server: a test plays the server's side of one
// connection frame by frame, to check the client's wire behaviour in cases
// a real server produces rarely (reset streams, duplicates, DISCONNECT
// without close).
type fakeServer struct {
	t         *testing.T
	ln        *quic.Listener
	clientTLS func() client.Config
}

func startFake(t *testing.T) *fakeServer {
	t.Helper()
	dir := t.TempDir()
	if err := certs.Generate(dir, nil); err != nil {
		t.Fatal(err)
	}
	serverTLS, err := certs.LoadServerTLS(filepath.Join(dir, certs.ServerCertFile), filepath.Join(dir, certs.ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := quic.ListenAddr("127.0.0.1:0", serverTLS, &quic.Config{MaxIdleTimeout: 5 * time.Second, EnableDatagrams: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	clientTLS, err := certs.ClientTLS(filepath.Join(dir, certs.CACertFile), false, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	return &fakeServer{t: t, ln: ln, clientTLS: func() client.Config {
		return client.Config{Addr: ln.Addr().String(), TLSConfig: clientTLS, Org: "demo", Appkey: "demo",
			User: "alice", Token: "t", Device: "phone"}
	}}
}

// fakeConn is the server side of one client connection.
type fakeConn struct {
	t    *testing.T
	qc   *quic.Conn
	ctl  *quic.Stream
	ctlR *bufio.Reader
}

// connect dials the fake server and plays a successful CONNECT.
func (fs *fakeServer) connect(t *testing.T) (*client.Client, *fakeConn) {
	t.Helper()
	c, fc, _ := fs.connectWith(t, &qimpb.Connected{User: "alice", Device: "phone", MaxFrame: qimpb.DefaultMaxFrame})
	return c, fc
}

// connectWith dials the fake server, answers CONNECT with connected and
// returns the CONNECT the client sent.
func (fs *fakeServer) connectWith(t *testing.T, connected *qimpb.Connected) (*client.Client, *fakeConn, *qimpb.Connect) {
	t.Helper()
	type dialed struct {
		c   *client.Client
		err error
	}
	ch := make(chan dialed, 1)
	go func() {
		c, err := client.Dial(ctxT(t), fs.clientTLS())
		ch <- dialed{c, err}
	}()
	fc := fs.accept(t)
	cmd := fc.read(fc.ctlR)
	var cn qimpb.Connect
	if cmd.GetCommand() != qimpb.CommandType_CONNECT || proto.Unmarshal(cmd.GetPayload(), &cn) != nil ||
		cn.GetUser() != "alice" || cn.GetDevice() != "phone" {
		t.Fatalf("first frame %v", cmd)
	}
	fc.respond(fc.ctl, 0, qimpb.Code_OK, connected)
	d := <-ch
	if d.err != nil {
		t.Fatal(d.err)
	}
	t.Cleanup(func() { d.c.Close() })
	// Runs first: a scripted server does not answer DISCONNECT.
	t.Cleanup(func() { fc.qc.CloseWithError(quic.ApplicationErrorCode(qimpb.Code_CLOSED), "test over") })
	return d.c, fc, &cn
}

func (fs *fakeServer) accept(t *testing.T) *fakeConn {
	t.Helper()
	qc, err := fs.ln.Accept(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qc.CloseWithError(0, "") })
	ctl, err := qc.AcceptStream(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	return &fakeConn{t: t, qc: qc, ctl: ctl, ctlR: bufio.NewReader(ctl)}
}

// acceptStream accepts the next stream the client opens.
func (fc *fakeConn) acceptStream() (*quic.Stream, *bufio.Reader) {
	fc.t.Helper()
	s, err := fc.qc.AcceptStream(ctxT(fc.t))
	if err != nil {
		fc.t.Fatal(err)
	}
	return s, bufio.NewReader(s)
}

func (fc *fakeConn) openStream() (*quic.Stream, *bufio.Reader) {
	fc.t.Helper()
	s, err := fc.qc.OpenStreamSync(ctxT(fc.t))
	if err != nil {
		fc.t.Fatal(err)
	}
	return s, bufio.NewReader(s)
}

func (fc *fakeConn) read(r *bufio.Reader) *qimpb.Command {
	fc.t.Helper()
	var cmd qimpb.Command
	if _, err := qimpb.ReadFrame(r, qimpb.DefaultMaxFrame, nil, &cmd); err != nil {
		fc.t.Fatalf("read frame: %v", err)
	}
	return &cmd
}

// readRequest reads a REQUEST and decodes its payload into m.
func (fc *fakeConn) readRequest(r *bufio.Reader, m proto.Message) *qimpb.Request {
	fc.t.Helper()
	cmd := fc.read(r)
	var req qimpb.Request
	if cmd.GetCommand() != qimpb.CommandType_REQUEST || proto.Unmarshal(cmd.GetPayload(), &req) != nil {
		fc.t.Fatalf("got %v, want a REQUEST", cmd)
	}
	if err := proto.Unmarshal(req.GetPayload(), m); err != nil {
		fc.t.Fatal(err)
	}
	return &req
}

// readResponse reads a RESPONSE.
func (fc *fakeConn) readResponse(r *bufio.Reader) *qimpb.Response {
	fc.t.Helper()
	cmd := fc.read(r)
	var resp qimpb.Response
	if cmd.GetCommand() != qimpb.CommandType_RESPONSE || proto.Unmarshal(cmd.GetPayload(), &resp) != nil {
		fc.t.Fatalf("got %v, want a RESPONSE", cmd)
	}
	return &resp
}

func (fc *fakeConn) write(s *quic.Stream, ct qimpb.CommandType, m proto.Message) {
	fc.t.Helper()
	frame, err := qimpb.EncodeFrame(ct, m)
	if err != nil {
		fc.t.Fatal(err)
	}
	if _, err := s.Write(frame); err != nil {
		fc.t.Fatal(err)
	}
}

func (fc *fakeConn) respond(s *quic.Stream, id uint64, code qimpb.Code, payload proto.Message) {
	fc.t.Helper()
	resp := &qimpb.Response{Code: int32(code), RequestId: id}
	if payload != nil {
		var err error
		if resp.Payload, err = proto.Marshal(payload); err != nil {
			fc.t.Fatal(err)
		}
	}
	fc.write(s, qimpb.CommandType_RESPONSE, resp)
}

// push sends m on s as the server's REQUEST{MESSAGE} with request id.
func (fc *fakeConn) push(s *quic.Stream, id uint64, m *qimpb.Message) {
	fc.t.Helper()
	payload, err := proto.Marshal(m)
	if err != nil {
		fc.t.Fatal(err)
	}
	fc.write(s, qimpb.CommandType_REQUEST, &qimpb.Request{Type: qimpb.RequestType_MESSAGE, RequestId: id, Payload: payload})
}

func txt(t *testing.T, s string) []byte {
	b, err := proto.Marshal(&qimpb.MessageTxt{Txt: s})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// async runs f in a goroutine and returns a channel of its error.
func async(f func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	return ch
}

func wait(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(waitTime):
		t.Fatal("timed out")
		return nil
	}
}

func TestFakeRetryOnNewStream(t *testing.T) {
	for _, tt := range []struct {
		name string
		end  func(s *quic.Stream)
		// unread: the server finished the stream, which says it did not
		// run the requests it left unanswered (PROTOCOL.md 3.3), so even
		// GROUP_CREATE is sent again.
		unread bool
	}{
		{"reset", func(s *quic.Stream) { s.CancelWrite(9); s.CancelRead(9) }, false},
		{"finished", func(s *quic.Stream) { s.Close() }, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, fc := startFake(t).connect(t)
			var ack *qimpb.MessageAck
			done := async(func() (err error) {
				ack, err = c.Send(ctxT(t), client.ToUser("bob"), client.Outgoing{Text: "x", ClientMsgID: "id-1"})
				return err
			})
			s1, r1 := fc.acceptStream()
			var m qimpb.Message
			req := fc.readRequest(r1, &m)
			if req.GetRequestId() == 0 || m.GetToUser() != "bob" || m.GetClientMsgId() != "id-1" ||
				len(req.GetOpts()) != 1 || !req.GetOpts()[0].GetOffline() {
				t.Fatalf("request %v, message %v", req, &m)
			}
			tt.end(s1) // without answering

			s2, r2 := fc.acceptStream()
			var again qimpb.Message
			req = fc.readRequest(r2, &again)
			if again.GetClientMsgId() != "id-1" {
				t.Fatalf("retry carries client_msg_id %q", again.GetClientMsgId())
			}
			fc.respond(s2, req.GetRequestId(), qimpb.Code_OK, &qimpb.MessageAck{Id: 7, Seq: 1, Duplicate: true})
			if err := wait(t, done); err != nil {
				t.Fatal(err)
			}
			if ack.GetSeq() != 1 || ack.GetId() != 7 {
				t.Fatalf("ack %v", ack)
			}

			// GROUP_CREATE is not repeated after a reset: it could create
			// two groups. After a FIN it was not run: it is sent again.
			done = async(func() error {
				_, err := c.CreateGroup(ctxT(t), "g")
				return err
			})
			s3, r3 := fc.acceptStream()
			fc.readRequest(r3, new(qimpb.GroupRequest))
			tt.end(s3)
			if tt.unread {
				s4, r4 := fc.acceptStream()
				req := fc.readRequest(r4, new(qimpb.GroupRequest))
				fc.respond(s4, req.GetRequestId(), qimpb.Code_OK, &qimpb.GroupResult{Group: &qimpb.GroupInfo{Id: "g1"}})
				if err := wait(t, done); err != nil {
					t.Fatalf("CreateGroup after a FIN: %v", err)
				}
				return
			}
			if err := wait(t, done); !errors.Is(err, client.ErrStreamEnded) {
				t.Fatalf("CreateGroup on an ended stream: %v", err)
			}
		})
	}
}

func TestFakePushes(t *testing.T) {
	c, fc := startFake(t).connect(t)
	x, xr := fc.openStream()
	from := func(seq uint64, text string) *qimpb.Message {
		return &qimpb.Message{FromUser: "bob", FromDevice: "phone", ToUser: "alice", Seq: seq, Payload: txt(t, text)}
	}
	next := func() *qimpb.Message { return recv(t, c, 1)[0] }
	ackOf := func() uint64 {
		t.Helper()
		resp := fc.readResponse(xr)
		if resp.GetCode() != int32(qimpb.Code_OK) {
			t.Fatalf("ack %v", resp)
		}
		return resp.GetRequestId()
	}

	fc.push(x, 1, from(1, "one"))
	if m := next(); client.Text(m) != "one" {
		t.Fatalf("got %v", m)
	}
	if id := ackOf(); id != 1 {
		t.Fatalf("ack of request %d", id)
	}
	fc.push(x, 1, from(1, "one again")) // a duplicate: acknowledged, not delivered
	if id := ackOf(); id != 1 {
		t.Fatalf("ack of request %d", id)
	}
	fc.push(x, 0, from(0, "typing")) // unstored: delivered, not acknowledged
	if m := next(); client.Text(m) != "typing" {
		t.Fatalf("got %v", m)
	}
	fc.push(x, 2, from(2, "two"))
	if m := next(); client.Text(m) != "two" {
		t.Fatalf("got %v", m)
	}
	if id := ackOf(); id != 2 {
		t.Fatalf("ack of request %d, want 2 (none for seq 0)", id)
	}

	// A send to bob goes on the stream the server opened for bob.
	done := async(func() error {
		_, err := c.Send(ctxT(t), client.ToUser("bob"), client.Outgoing{Text: "reply"})
		return err
	})
	var m qimpb.Message
	req := fc.readRequest(xr, &m)
	fc.respond(x, req.GetRequestId(), qimpb.Code_OK, &qimpb.MessageAck{Seq: 3})
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}

	// A refusal of one request is an *Error, and the stream goes on.
	done = async(func() error {
		_, err := c.Send(ctxT(t), client.ToUser("bob"), client.Outgoing{Text: "again"})
		return err
	})
	req = fc.readRequest(xr, &m)
	fc.write(x, qimpb.CommandType_RESPONSE, &qimpb.Response{Code: int32(qimpb.Code_RATE_LIMITED), Reason: "slow down", RequestId: req.GetRequestId()})
	if err := wait(t, done); !errors.Is(err, &client.Error{Code: qimpb.Code_RATE_LIMITED, Reason: "slow down"}) ||
		err.Error() != "qim: RATE_LIMITED: slow down" {
		t.Fatalf("got %v", err)
	}

	// A request other than MESSAGE from the server is refused.
	fc.write(x, qimpb.CommandType_REQUEST, &qimpb.Request{Type: qimpb.RequestType_CONTACT, RequestId: 9})
	if resp := fc.readResponse(xr); resp.GetRequestId() != 9 || resp.GetCode() != int32(qimpb.Code_BAD_REQUEST) {
		t.Fatalf("answer to a CONTACT request: %v", resp)
	}

	// A group message on another server stream.
	y, yr := fc.openStream()
	fc.push(y, 1, &qimpb.Message{FromUser: "carol", ToGroup: "g1", Seq: 1, Payload: txt(t, "hi all")})
	if m := next(); client.ConvOf("alice", m) != client.ToGroup("g1") {
		t.Fatalf("got %v", m)
	}
	if resp := fc.readResponse(yr); resp.GetRequestId() != 1 {
		t.Fatalf("ack %v", resp)
	}
}

func TestFakeStreamRefused(t *testing.T) {
	c, fc := startFake(t).connect(t)
	done := async(func() error { return c.AddContact(ctxT(t), "bob") })
	s, r := fc.acceptStream()
	fc.readRequest(r, new(qimpb.ContactRequest))
	fc.write(s, qimpb.CommandType_RESPONSE, &qimpb.Response{Code: int32(qimpb.Code_FRAME_TOO_LARGE), Reason: "too big"})
	s.Close()
	if err := wait(t, done); !errors.Is(err, &client.Error{Code: qimpb.Code_FRAME_TOO_LARGE}) {
		t.Fatalf("got %v", err)
	}
	// The next request uses a new general stream.
	done = async(func() error { return c.AddContact(ctxT(t), "bob") })
	s, r = fc.acceptStream()
	req := fc.readRequest(r, new(qimpb.ContactRequest))
	fc.respond(s, req.GetRequestId(), qimpb.Code_OK, nil)
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
}

func TestFakeServerDisconnects(t *testing.T) {
	c, fc := startFake(t).connect(t)
	// The server says REPLACED and, misbehaving, keeps the connection open.
	fc.write(fc.ctl, qimpb.CommandType_DISCONNECT, &qimpb.Disconnect{Code: int32(qimpb.Code_REPLACED), Reason: "elsewhere"})
	select {
	case <-c.Done():
	case <-time.After(waitTime):
		t.Fatal("session not ended")
	}
	if err := c.Err(); !errors.Is(err, &client.Error{Code: qimpb.Code_REPLACED, Reason: "elsewhere"}) {
		t.Fatalf("Err = %v", err)
	}
	<-fc.qc.Context().Done()
}

func TestFakeControlViolation(t *testing.T) {
	c, fc := startFake(t).connect(t)
	fc.respond(fc.ctl, 0, qimpb.Code_OK, nil)
	<-c.Done()
	if c.Err() == nil {
		t.Fatal("Err = nil")
	}
	<-fc.qc.Context().Done()
	var ae *quic.ApplicationError
	if err := context.Cause(fc.qc.Context()); !errors.As(err, &ae) || ae.ErrorCode != quic.ApplicationErrorCode(qimpb.Code_PROTOCOL_VIOLATION) {
		t.Fatalf("connection closed with %v", err)
	}
}

func TestFakeClose(t *testing.T) {
	c, fc := startFake(t).connect(t)
	done := async(c.Close)
	cmd := fc.read(fc.ctlR)
	var d qimpb.Disconnect
	if cmd.GetCommand() != qimpb.CommandType_DISCONNECT || proto.Unmarshal(cmd.GetPayload(), &d) != nil ||
		d.GetCode() != int32(qimpb.Code_CLOSED) {
		t.Fatalf("got %v", cmd)
	}
	fc.qc.CloseWithError(quic.ApplicationErrorCode(qimpb.Code_CLOSED), "bye")
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	if err := c.Err(); err != nil {
		t.Fatalf("Err = %v", err)
	}

	// A server that does not close after DISCONNECT does not hold Close.
	c, fc = startFake(t).connect(t)
	start := time.Now()
	c.Close()
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Close took %v", d)
	}
	<-fc.qc.Context().Done()
}

func TestFakeDialTimeout(t *testing.T) {
	fs := startFake(t)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	done := async(func() error {
		c, err := client.Dial(ctx, fs.clientTLS())
		if err == nil {
			c.Close()
		}
		return err
	})
	fc := fs.accept(t)
	fc.read(fc.ctlR) // CONNECT, never answered
	if err := wait(t, done); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial: %v", err)
	}
}

func TestFakeDialRefused(t *testing.T) {
	fs := startFake(t)
	done := async(func() error {
		_, err := client.Dial(ctxT(t), fs.clientTLS())
		return err
	})
	fc := fs.accept(t)
	fc.read(fc.ctlR)
	fc.write(fc.ctl, qimpb.CommandType_DISCONNECT, &qimpb.Disconnect{Code: int32(qimpb.Code_TOKEN_EXPIRED), Reason: "expired"})
	err := wait(t, done)
	var qe *client.Error
	if !errors.As(err, &qe) || qe.Code != qimpb.Code_TOKEN_EXPIRED || qe.Reason != "expired" {
		t.Fatalf("Dial: %v", err)
	}
}

func TestFakeCloseFlushesAcks(t *testing.T) {
	c, fc := startFake(t).connect(t)
	x, xr := fc.openStream()
	const n = 50
	for seq := uint64(1); seq <= n; seq++ {
		fc.push(x, seq, &qimpb.Message{FromUser: "bob", ToUser: "alice", Seq: seq, Payload: txt(t, "m")})
	}
	recv(t, c, n)
	done := async(c.Close) // right after the last delivery
	cmd := fc.read(fc.ctlR)
	if cmd.GetCommand() != qimpb.CommandType_DISCONNECT {
		t.Fatalf("got %v", cmd)
	}
	// Every delivered message is acknowledged, the last one included.
	var last uint64
	for last < n {
		last = fc.readResponse(xr).GetRequestId()
	}
	fc.qc.CloseWithError(quic.ApplicationErrorCode(qimpb.Code_CLOSED), "bye")
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
}

// TestFakeStreamCache checks that the client keeps at most MaxStreams
// streams it opened: before opening another, it finishes the least recently
// used idle one (FIN), and it opens a new stream when it sends there again.
func TestFakeStreamCache(t *testing.T) {
	fs := startFake(t)
	base := fs.clientTLS
	fs.clientTLS = func() client.Config {
		cfg := base()
		cfg.MaxStreams = 2
		return cfg
	}
	c, fc := fs.connect(t)
	send := func(to string) (*quic.Stream, *bufio.Reader) {
		t.Helper()
		done := async(func() error {
			_, err := c.Send(ctxT(t), client.ToUser(to), client.Outgoing{Text: "x"})
			return err
		})
		s, r := fc.acceptStream()
		var m qimpb.Message
		req := fc.readRequest(r, &m)
		if m.GetToUser() != to {
			t.Fatalf("request for %q on a new stream, want %q", m.GetToUser(), to)
		}
		fc.respond(s, req.GetRequestId(), qimpb.Code_OK, &qimpb.MessageAck{Id: 1, Seq: 1})
		if err := wait(t, done); err != nil {
			t.Fatal(err)
		}
		return s, r
	}
	finished := func(what string, s *quic.Stream, r *bufio.Reader) {
		t.Helper()
		var cmd qimpb.Command
		if _, err := qimpb.ReadFrame(r, qimpb.DefaultMaxFrame, nil, &cmd); !errors.Is(err, io.EOF) {
			t.Fatalf("%s: read %v, %v; want EOF", what, &cmd, err)
		}
		s.Close() // as the server does: the stream is released
	}
	s1, r1 := send("bob")
	s2, r2 := send("carol")
	send("dave") // a third stream: bob's, the least recently used, is finished
	finished("bob's stream", s1, r1)
	send("bob") // a new stream for bob; carol's is finished
	finished("carol's stream", s2, r2)
}

package quicsrv_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// rawConn is a hand-driven client: it writes frames exactly as a test says,
// to see how the server answers misbehaviour.
type rawConn struct {
	t  *testing.T
	qc *quic.Conn
}

func dialRaw(t *testing.T, srv *testserver.Server) *rawConn {
	t.Helper()
	return dialRawAddr(t, srv.Addr, srv.ClientTLS())
}

// dialRawAddr is dialRaw to any address, with the client TLS
// configuration tc.
func dialRawAddr(t *testing.T, addr string, tc *tls.Config) *rawConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	qc, err := quic.DialAddr(ctx, addr, tc, &quic.Config{MaxIdleTimeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { qc.CloseWithError(0, "") })
	return &rawConn{t: t, qc: qc}
}

func (c *rawConn) open() (*quic.Stream, *bufio.Reader) {
	c.t.Helper()
	str, err := c.qc.OpenStream()
	if err != nil {
		c.t.Fatalf("open stream: %v", err)
	}
	return str, bufio.NewReader(str)
}

func writeCmd(t *testing.T, str *quic.Stream, ct qimpb.CommandType, m proto.Message) {
	t.Helper()
	frame, err := qimpb.EncodeFrame(ct, m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := str.Write(frame); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func readCmd(t *testing.T, r *bufio.Reader) (*qimpb.Command, error) {
	t.Helper()
	var cmd qimpb.Command
	_, err := qimpb.ReadFrame(r, qimpb.DefaultMaxFrame, nil, &cmd)
	return &cmd, err
}

// connect authenticates c as user and returns the control stream.
func (c *rawConn) connect(srv *testserver.Server, user string) (*quic.Stream, *bufio.Reader) {
	c.t.Helper()
	ctrl, r := c.open()
	writeCmd(c.t, ctrl, qimpb.CommandType_CONNECT, &qimpb.Connect{Org: "demo", Appkey: "demo", User: user, Token: srv.Token(user), Device: "raw"})
	cmd, err := readCmd(c.t, r)
	if err != nil {
		c.t.Fatalf("read CONNECT answer: %v", err)
	}
	resp := decodeResponse(c.t, cmd)
	if resp.Code != 0 {
		c.t.Fatalf("CONNECT refused: %v %s", qimpb.Code(resp.Code), resp.Reason)
	}
	return ctrl, r
}

func decodeResponse(t *testing.T, cmd *qimpb.Command) *qimpb.Response {
	t.Helper()
	if cmd.Command != qimpb.CommandType_RESPONSE {
		t.Fatalf("got %v, want RESPONSE", cmd.Command)
	}
	var resp qimpb.Response
	if err := proto.Unmarshal(cmd.Payload, &resp); err != nil {
		t.Fatal(err)
	}
	return &resp
}

// closeCode waits for the connection to close and returns the application
// error code the server closed it with.
func (c *rawConn) closeCode() qimpb.Code {
	c.t.Helper()
	select {
	case <-c.qc.Context().Done():
	case <-time.After(10 * time.Second):
		c.t.Fatal("connection not closed by the server")
	}
	var ae *quic.ApplicationError
	if err := context.Cause(c.qc.Context()); !errors.As(err, &ae) || !ae.Remote {
		c.t.Fatalf("connection closed by %v, want a remote application error", err)
	}
	return qimpb.Code(ae.ErrorCode)
}

// expectDisconnect reads frames until a DISCONNECT and checks its code; a
// connection closed with the code before the frame arrived counts too.
func (c *rawConn) expectDisconnect(r *bufio.Reader, want qimpb.Code) {
	c.t.Helper()
	cmd, err := readCmd(c.t, r)
	if err == nil {
		if cmd.Command != qimpb.CommandType_DISCONNECT {
			c.t.Fatalf("got %v, want DISCONNECT", cmd.Command)
		}
		var d qimpb.Disconnect
		if err := proto.Unmarshal(cmd.Payload, &d); err != nil {
			c.t.Fatal(err)
		}
		if qimpb.Code(d.Code) != want {
			c.t.Fatalf("DISCONNECT code %v (%s), want %v", qimpb.Code(d.Code), d.Reason, want)
		}
	}
	if got := c.closeCode(); got != want {
		c.t.Fatalf("connection closed with %v, want %v", got, want)
	}
}

func TestConnectRefusals(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{Apps: []string{"acme/chat"}})
	for _, tt := range []struct {
		name string
		conn *qimpb.Connect
		want qimpb.Code
	}{
		{"bad token", &qimpb.Connect{Org: "demo", Appkey: "demo", User: "alice", Token: "v1.99999999999.AAAA"}, qimpb.Code_UNAUTHENTICATED},
		{"empty token", &qimpb.Connect{Org: "demo", Appkey: "demo", User: "alice"}, qimpb.Code_UNAUTHENTICATED},
		{"token of another user", &qimpb.Connect{Org: "demo", Appkey: "demo", User: "alice", Token: srv.Token("bob")}, qimpb.Code_UNAUTHENTICATED},
		{"token of another application", &qimpb.Connect{Org: "demo", Appkey: "demo", User: "alice", Token: srv.TokenFor("acme", "chat", "alice", time.Hour)}, qimpb.Code_UNAUTHENTICATED},
		{"unknown application", &qimpb.Connect{Org: "nope", Appkey: "demo", User: "alice", Token: srv.Token("alice")}, qimpb.Code_UNAUTHENTICATED},
		{"expired token", &qimpb.Connect{Org: "demo", Appkey: "demo", User: "alice", Token: srv.TokenFor("demo", "demo", "alice", -time.Minute)}, qimpb.Code_TOKEN_EXPIRED},
		{"bad user id", &qimpb.Connect{Org: "demo", Appkey: "demo", User: "a:b", Token: "x"}, qimpb.Code_INVALID_ARGUMENT},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, srv)
			ctrl, r := c.open()
			writeCmd(t, ctrl, qimpb.CommandType_CONNECT, tt.conn)
			c.expectDisconnect(r, tt.want)
		})
	}
}

func TestProtocolViolations(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})

	t.Run("request before connect", func(t *testing.T) {
		c := dialRaw(t, srv)
		ctrl, r := c.open()
		writeCmd(t, ctrl, qimpb.CommandType_REQUEST, &qimpb.Request{Type: qimpb.RequestType_CONTACT})
		c.expectDisconnect(r, qimpb.Code_PROTOCOL_VIOLATION)
	})
	t.Run("connect twice", func(t *testing.T) {
		c := dialRaw(t, srv)
		ctrl, r := c.connect(srv, "alice")
		writeCmd(t, ctrl, qimpb.CommandType_CONNECT, &qimpb.Connect{Org: "demo", Appkey: "demo", User: "alice", Token: srv.Token("alice")})
		c.expectDisconnect(r, qimpb.Code_PROTOCOL_VIOLATION)
	})
	t.Run("unsupported version", func(t *testing.T) {
		c := dialRaw(t, srv)
		ctrl, r := c.open()
		payload, _ := proto.Marshal(&qimpb.Connect{Org: "demo", Appkey: "demo", User: "alice", Token: srv.Token("alice")})
		frame, _ := qimpb.AppendFrame(nil, &qimpb.Command{Version: 9, Command: qimpb.CommandType_CONNECT, Payload: payload})
		ctrl.Write(frame)
		c.expectDisconnect(r, qimpb.Code_UNSUPPORTED_VERSION)
	})
	t.Run("garbage on control stream", func(t *testing.T) {
		c := dialRaw(t, srv)
		ctrl, r := c.open()
		ctrl.Write([]byte{0x05, 0xff, 0xff, 0xff, 0xff, 0xff})
		c.expectDisconnect(r, qimpb.Code_BAD_REQUEST)
	})
	t.Run("huge declared length on control stream", func(t *testing.T) {
		c := dialRaw(t, srv)
		ctrl, r := c.open()
		ctrl.Write([]byte{0xff, 0xff, 0xff, 0xff, 0x0f}) // 4 GiB declared
		c.expectDisconnect(r, qimpb.Code_FRAME_TOO_LARGE)
	})
	t.Run("disconnect closes normally", func(t *testing.T) {
		c := dialRaw(t, srv)
		ctrl, _ := c.connect(srv, "alice")
		writeCmd(t, ctrl, qimpb.CommandType_DISCONNECT, &qimpb.Disconnect{Code: int32(qimpb.Code_CLOSED)})
		if got := c.closeCode(); got != qimpb.Code_CLOSED {
			t.Fatalf("closed with %v, want CLOSED", got)
		}
	})
}

func TestAuthTimeout(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{AuthTimeout: 200 * time.Millisecond})
	t.Run("no stream", func(t *testing.T) {
		c := dialRaw(t, srv)
		if got := c.closeCode(); got != qimpb.Code_AUTH_TIMEOUT {
			t.Fatalf("closed with %v, want AUTH_TIMEOUT", got)
		}
	})
	t.Run("stream but no connect", func(t *testing.T) {
		c := dialRaw(t, srv)
		ctrl, r := c.open()
		ctrl.Write([]byte{0x10}) // a length, then nothing
		c.expectDisconnect(r, qimpb.Code_AUTH_TIMEOUT)
	})
}

// TestFrameTooLargeOnConversationStream checks that an oversized frame is
// refused from its length alone, that only its stream is affected, and that
// the connection and other users go on.
func TestFrameTooLargeOnConversationStream(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{MaxFrame: 1024})
	c := dialRaw(t, srv)
	c.connect(srv, "alice")

	str, r := c.open()
	// Declare 1 MiB and send only a few bytes: the server must answer
	// without waiting for the rest.
	str.Write([]byte{0x80, 0x80, 0x40, 1, 2, 3})
	cmd, err := readCmd(t, r)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if resp := decodeResponse(t, cmd); qimpb.Code(resp.Code) != qimpb.Code_FRAME_TOO_LARGE {
		t.Fatalf("code %v, want FRAME_TOO_LARGE", qimpb.Code(resp.Code))
	}

	// The same connection still serves requests on another stream.
	str2, r2 := c.open()
	writeCmd(t, str2, qimpb.CommandType_REQUEST, contactList(7))
	cmd, err = readCmd(t, r2)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if resp := decodeResponse(t, cmd); resp.Code != 0 || resp.RequestId != 7 {
		t.Fatalf("got %v", resp)
	}

	// And another user is served.
	c2 := dialRaw(t, srv)
	c2.connect(srv, "bob")
}

func contactList(id uint64) *qimpb.Request {
	payload, _ := proto.Marshal(&qimpb.ContactRequest{Op: qimpb.ContactOp_CONTACT_LIST})
	return &qimpb.Request{Type: qimpb.RequestType_CONTACT, RequestId: id, Payload: payload}
}

// TestBadRequestsOnConversationStream checks that requests that decode but
// make no sense get a code and the stream goes on.
func TestBadRequestsOnConversationStream(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	c := dialRaw(t, srv)
	c.connect(srv, "alice")
	str, r := c.open()

	txt, _ := proto.Marshal(&qimpb.MessageTxt{Txt: "hi"})
	msg := func(m *qimpb.Message) []byte { b, _ := proto.Marshal(m); return b }
	for i, tt := range []struct {
		name string
		ct   qimpb.CommandType
		req  proto.Message
		want qimpb.Code
	}{
		{"payload not a message", qimpb.CommandType_REQUEST, &qimpb.Request{Type: qimpb.RequestType_MESSAGE, Payload: []byte{0xff, 0xff}}, qimpb.Code_BAD_REQUEST},
		{"no addressee", qimpb.CommandType_REQUEST, &qimpb.Request{Payload: msg(&qimpb.Message{Payload: txt})}, qimpb.Code_INVALID_ARGUMENT},
		{"both addressees", qimpb.CommandType_REQUEST, &qimpb.Request{Payload: msg(&qimpb.Message{Payload: txt, ToUser: "bob", ToGroup: "g1"})}, qimpb.Code_INVALID_ARGUMENT},
		{"empty text", qimpb.CommandType_REQUEST, &qimpb.Request{Payload: msg(&qimpb.Message{ToUser: "bob"})}, qimpb.Code_INVALID_ARGUMENT},
		{"unknown message type", qimpb.CommandType_REQUEST, &qimpb.Request{Payload: msg(&qimpb.Message{Type: 7, ToUser: "bob", Payload: txt})}, qimpb.Code_INVALID_ARGUMENT},
		{"image with ftp url", qimpb.CommandType_REQUEST, &qimpb.Request{Payload: msg(&qimpb.Message{Type: qimpb.MessageType_IMAGE, ToUser: "bob", Payload: func() []byte { b, _ := proto.Marshal(&qimpb.MessageImg{Url: "ftp://x/y.png"}); return b }()})}, qimpb.Code_INVALID_ARGUMENT},
		{"unknown request type", qimpb.CommandType_REQUEST, &qimpb.Request{Type: 9}, qimpb.Code_INVALID_ARGUMENT},
		{"unknown group op", qimpb.CommandType_REQUEST, &qimpb.Request{Type: qimpb.RequestType_GROUP}, qimpb.Code_INVALID_ARGUMENT},
		{"unknown contact op", qimpb.CommandType_REQUEST, &qimpb.Request{Type: qimpb.RequestType_CONTACT}, qimpb.Code_INVALID_ARGUMENT},
		{"group of nobody", qimpb.CommandType_REQUEST, &qimpb.Request{Payload: msg(&qimpb.Message{ToGroup: "gnothere", Payload: txt})}, qimpb.Code_NOT_FOUND},
		{"connect on a conversation stream", qimpb.CommandType_CONNECT, &qimpb.Connect{}, qimpb.Code_PROTOCOL_VIOLATION},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if req, ok := tt.req.(*qimpb.Request); ok {
				req.RequestId = uint64(100 + i)
			}
			writeCmd(t, str, tt.ct, tt.req)
			cmd, err := readCmd(t, r)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			resp := decodeResponse(t, cmd)
			if qimpb.Code(resp.Code) != tt.want {
				t.Fatalf("code %v (%s), want %v", qimpb.Code(resp.Code), resp.Reason, tt.want)
			}
		})
	}
	// The stream still works.
	writeCmd(t, str, qimpb.CommandType_REQUEST, contactList(1))
	cmd, err := readCmd(t, r)
	if err != nil {
		t.Fatal(err)
	}
	if resp := decodeResponse(t, cmd); resp.Code != 0 {
		t.Fatalf("got %v", resp)
	}
}

// TestCannotClaimSender checks that a client cannot claim to be another
// sender, or set server fields: from_user, from_device, id, seq and
// timestamp are the server's.
func TestCannotClaimSender(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	mallory := dialRaw(t, srv)
	mallory.connect(srv, "mallory")
	bob := dialRaw(t, srv)
	bob.connect(srv, "bob")

	txt, _ := proto.Marshal(&qimpb.MessageTxt{Txt: "I am alice"})
	payload, _ := proto.Marshal(&qimpb.Message{
		ToUser: "bob", Payload: txt, ClientMsgId: "m1",
		FromUser: "alice", FromDevice: "phone", Id: 1, Seq: 99, Timestamp: 1,
	})
	str, r := mallory.open()
	writeCmd(t, str, qimpb.CommandType_REQUEST, &qimpb.Request{Type: qimpb.RequestType_MESSAGE, RequestId: 1, Payload: payload})
	cmd, err := readCmd(t, r)
	if err != nil {
		t.Fatal(err)
	}
	if resp := decodeResponse(t, cmd); resp.Code != 0 {
		t.Fatalf("send refused: %v", resp)
	}

	// Bob's push shows who really sent it.
	push, err := bob.qc.AcceptStream(ctxTimeout(t))
	if err != nil {
		t.Fatal(err)
	}
	cmd, err = readCmd(t, bufio.NewReader(push))
	if err != nil {
		t.Fatal(err)
	}
	var req qimpb.Request
	var m qimpb.Message
	if err := proto.Unmarshal(cmd.Payload, &req); err != nil || proto.Unmarshal(req.Payload, &m) != nil {
		t.Fatalf("push does not decode: %v", err)
	}
	if m.FromUser != "mallory" || m.FromDevice != "raw" || m.Seq != 1 || m.Timestamp < time.Now().Add(-time.Minute).UnixMilli() {
		t.Fatalf("push %v: the server kept fields the client claimed", &m)
	}
}

func ctxTimeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

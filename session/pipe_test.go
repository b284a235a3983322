package session

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/core"
	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// pipeStream is one end of an in-memory bidirectional stream made of two
// io.Pipes, one each way: a Stream with no transport at all.
type pipeStream struct {
	r *io.PipeReader // what the other end writes
	w *io.PipeWriter // to the other end
}

func newPipeStreams() (a, b *pipeStream) {
	abR, abW := io.Pipe()
	baR, baW := io.Pipe()
	return &pipeStream{r: baR, w: abW}, &pipeStream{r: abR, w: baW}
}

func (s *pipeStream) Read(p []byte) (int, error)  { return s.r.Read(p) }
func (s *pipeStream) Write(p []byte) (int, error) { return s.w.Write(p) }

// Close finishes the send side: the other end reads EOF.
func (s *pipeStream) Close() error { return s.w.Close() }

// CancelRead stops the read side: the other end's writes fail.
func (s *pipeStream) CancelRead(code qimpb.Code) {
	s.r.CloseWithError(fmt.Errorf("stop sending: %v", code))
}

func (s *pipeStream) kill() {
	s.r.CloseWithError(io.ErrClosedPipe)
	s.w.CloseWithError(io.ErrClosedPipe)
}

// pipeConn is a device connection in memory: the session's Conn on one
// side, the device's streams on the other.
type pipeConn struct {
	accept chan *pipeStream // the device's ends of streams the server opened
	closed chan struct{}

	mu           sync.Mutex
	streams      []*pipeStream // every end, killed by close
	disconnected []qimpb.Code
	closeOnce    sync.Once
}

func newPipeConn() *pipeConn {
	return &pipeConn{accept: make(chan *pipeStream, 64), closed: make(chan struct{})}
}

func (c *pipeConn) pair() (server, device *pipeStream) {
	server, device = newPipeStreams()
	c.mu.Lock()
	c.streams = append(c.streams, server, device)
	c.mu.Unlock()
	return server, device
}

// OpenStream implements Conn.
func (c *pipeConn) OpenStream(ctx context.Context) (Stream, error) {
	server, device := c.pair()
	select {
	case c.accept <- device:
		return server, nil
	case <-c.closed:
		return nil, io.ErrClosedPipe
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Disconnect implements Conn.
func (c *pipeConn) Disconnect(code qimpb.Code, _ string) {
	c.mu.Lock()
	c.disconnected = append(c.disconnected, code)
	c.mu.Unlock()
	c.close()
}

// HandshakeComplete implements Conn: there is no 0-RTT in memory.
func (c *pipeConn) HandshakeComplete() <-chan struct{} {
	done := make(chan struct{})
	close(done)
	return done
}

func (c *pipeConn) close() {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, s := range c.streams {
			s.kill()
		}
	})
}

// pipeDevice is a device connected in memory to a session.
type pipeDevice struct {
	t    *testing.T
	conn *pipeConn
	s    *Session
}

// connect opens user's device's session on d over a pipeConn; it ends with
// the test.
func connect(t *testing.T, d *Devices, user string) *pipeDevice {
	t.Helper()
	conn := newPipeConn()
	s, err := d.Open(t.Context(), "app", &qimpb.Connect{User: user, Device: "phone"}, conn, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.close() // first, so that blocked reads and writes return
		s.Close()
	})
	return &pipeDevice{t: t, conn: conn, s: s}
}

// open opens a stream from the device, as a transport would hand it to
// the session.
func (pd *pipeDevice) open() (*pipeStream, *bufio.Reader) {
	server, device := pd.conn.pair()
	pd.s.HandleStream(server)
	return device, bufio.NewReader(device)
}

// accept returns the next stream the server opened to the device.
func (pd *pipeDevice) accept() (*pipeStream, *bufio.Reader) {
	pd.t.Helper()
	select {
	case str := <-pd.conn.accept:
		return str, bufio.NewReader(str)
	case <-time.After(10 * time.Second):
		pd.t.Fatal("the server opened no stream")
		return nil, nil
	}
}

// readFrame reads one frame, failing the test after 10 s.
func readFrame(t *testing.T, r *bufio.Reader) *qimpb.Command {
	t.Helper()
	type result struct {
		cmd *qimpb.Command
		err error
	}
	ch := make(chan result, 1)
	go func() {
		var cmd qimpb.Command
		_, err := qimpb.ReadFrame(r, qimpb.DefaultMaxFrame, nil, &cmd)
		ch <- result{&cmd, err}
	}()
	select {
	case res := <-ch:
		if res.err != nil {
			t.Fatal(res.err)
		}
		return res.cmd
	case <-time.After(10 * time.Second):
		t.Fatal("no frame within 10 s")
		return nil
	}
}

// readPush reads a push and returns its request id and message.
func readPush(t *testing.T, r *bufio.Reader) (uint64, *qimpb.Message) {
	t.Helper()
	cmd := readFrame(t, r)
	var req qimpb.Request
	var m qimpb.Message
	if cmd.Command != qimpb.CommandType_REQUEST || proto.Unmarshal(cmd.Payload, &req) != nil || req.Type != qimpb.RequestType_MESSAGE || proto.Unmarshal(req.Payload, &m) != nil {
		t.Fatalf("push %v does not decode", cmd)
	}
	return req.RequestId, &m
}

func textPayload(s string) []byte {
	b, _ := proto.Marshal(&qimpb.MessageTxt{Txt: s})
	return b
}

// TestSessionOverPipes runs the device protocol with no transport: alice
// sends a MESSAGE request on a stream she opened and reads its RESPONSE;
// bob reads the PUSH on the stream the server opened to him and
// acknowledges it, which moves his cursor in the store.
func TestSessionOverPipes(t *testing.T) {
	d := newDevices(t, Config{}, core.Config{SendRate: -1})
	alice, bob := connect(t, d, "alice"), connect(t, d, "bob")

	str, r := alice.open()
	frame, err := qimpb.AppendRequestFrame(nil, qimpb.RequestType_MESSAGE, 7, &qimpb.Message{ToUser: "bob", ClientMsgId: "c1", Payload: textPayload("over pipes")})
	if err != nil {
		t.Fatal(err)
	}
	go str.Write(frame) // the pipe is synchronous: the session reads it
	cmd := readFrame(t, r)
	var resp qimpb.Response
	var ack qimpb.MessageAck
	if cmd.Command != qimpb.CommandType_RESPONSE || proto.Unmarshal(cmd.Payload, &resp) != nil || proto.Unmarshal(resp.Payload, &ack) != nil {
		t.Fatalf("response %v does not decode", cmd)
	}
	if resp.Code != int32(qimpb.Code_OK) || resp.RequestId != 7 || ack.Seq != 1 || ack.Id == 0 || ack.Timestamp == 0 {
		t.Fatalf("response %v, ack %v", &resp, &ack)
	}

	push, pr := bob.accept()
	id, m := readPush(t, pr)
	if id != 1 || m.Seq != 1 || m.FromUser != "alice" || m.FromDevice != "phone" || m.Id != ack.Id {
		t.Fatalf("push %d: %v", id, m)
	}
	ackFrame, _ := qimpb.EncodeFrame(qimpb.CommandType_RESPONSE, &qimpb.Response{RequestId: id})
	go push.Write(ackFrame)
	conv := store.DirectConv("alice", "bob")
	waitFor(t, func() bool {
		inbox, err := d.Hub().Store().Inbox(t.Context(), "app", "bob", "phone")
		return err == nil && len(inbox) == 1 && inbox[0].Conv == conv && inbox[0].Acked == 1
	})
}

// TestReceiveWithoutFrame hands a session events with no shared frame, as
// a Router that carries events between processes does: the session
// encodes the pushes itself, for an unstored message and a stored one.
func TestReceiveWithoutFrame(t *testing.T) {
	d := newDevices(t, Config{}, core.Config{})
	bob := connect(t, d, "bob")
	router := d.Hub().Router()
	router.Deliver("app", []string{"bob"}, core.Event{Msg: &qimpb.Message{FromUser: "alice", FromDevice: "x", ToUser: "bob", Payload: textPayload("unstored"), Timestamp: 1}})
	_, r := bob.accept()
	if id, m := readPush(t, r); id != 0 || m.Seq != 0 || string(m.Payload) != string(textPayload("unstored")) {
		t.Fatalf("unstored push %d: %v", id, m)
	}
	res, err := d.Hub().Store().Append(t.Context(), []store.Append{{App: "app", Conv: store.DirectConv("alice", "bob"), Members: []string{"alice", "bob"},
		Msg: &qimpb.Message{FromUser: "alice", FromDevice: "x", ToUser: "bob", Payload: textPayload("stored")}}})
	if err != nil {
		t.Fatal(err)
	}
	router.Deliver("app", []string{"bob"}, core.Event{Msg: res[0].Msg})
	if id, m := readPush(t, r); id != 1 || m.Seq != 1 || string(m.Payload) != string(textPayload("stored")) {
		t.Fatalf("stored push %d: %v", id, m)
	}
}

func (c *pipeConn) WriteEvent([]byte) error     { return nil }
func (c *pipeConn) Datagrams() bool             { return false }
func (c *pipeConn) SendDatagram(b []byte) error { return errors.New("no datagrams") }

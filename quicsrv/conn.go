package quicsrv

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/core"
	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/session"
)

// serverConn is one device's QUIC connection. Its serve goroutine owns the
// connection: it authenticates, accepts streams, and returns only after the
// session and every goroutine it started have ended.
type serverConn struct {
	// Static after construction.
	srv    *Server
	qc     *quic.Conn
	logger *slog.Logger
	unauth *unauthSlot // its place among unauthenticated connections, released once (unauth.go)

	// Set by authenticate before the session starts.
	ctrl       *quic.Stream
	ctrlReader *bufio.Reader
	sess       atomic.Pointer[session.Session] // set once authenticated (readDatagrams)

	wg             sync.WaitGroup // the control reader and Disconnect's writer
	disconnectOnce sync.Once

	// finished is set when serve starts waiting for wg: no goroutine may
	// be added to it after that. Guarded by mu.
	mu          sync.Mutex
	finished    bool
	ctrlWriteMu sync.Mutex // guards ctrl (set once) and writes to it
}

// serve runs the connection to its end.
func (sc *serverConn) serve() {
	defer func() {
		sc.mu.Lock()
		sc.finished = true
		sc.mu.Unlock()
		sc.wg.Wait()
	}()
	sess, err := sc.authenticate()
	if err != nil {
		code, reason := core.CodeOf(err)
		switch {
		case sc.qc.Context().Err() != nil:
			sc.logger.Debug("connection ended before CONNECT was answered", "err", err)
			sc.srv.Metrics.ConnectAborted()
		case code == qimpb.Code_INTERNAL || code == qimpb.Code_STORE_UNAVAILABLE:
			sc.logger.Error("authenticate", "err", err)
			sc.srv.Metrics.ConnectRefused(code)
		default:
			sc.logger.Debug("connection refused", "code", code, "err", err)
			sc.srv.Metrics.ConnectRefused(code)
		}
		if code == qimpb.Code_UNAUTHENTICATED || code == qimpb.Code_TOKEN_EXPIRED {
			// Slow down guessing from one address.
			if d := sc.srv.authFailureDelay(sc.qc.RemoteAddr()); d > 0 {
				select {
				case <-time.After(d):
				case <-sc.qc.Context().Done():
				}
			}
		}
		sc.Disconnect(code, reason)
		return
	}
	sc.sess.Store(sess)
	sc.srv.authenticated(sc)
	sc.srv.Metrics.SessionOpened()
	sc.logger.Debug("session open")

	sc.wg.Go(func() { sc.readControl(sess) })
	for {
		str, err := sc.qc.AcceptStream(context.Background())
		if err != nil {
			break
		}
		sess.HandleStream(quicStream{str})
	}
	sess.Close()
	sc.srv.Metrics.SessionClosed()
	sc.logger.Debug("session closed", "cause", context.Cause(sc.qc.Context()))
}

// authenticate reads CONNECT from the first stream within the auth timeout,
// opens the device's session and answers CONNECT. A CONNECT that is not
// accepted (a bad token, or the store cannot open the session) returns an
// error for serve to refuse it with.
func (sc *serverConn) authenticate() (sess *session.Session, err error) {
	deadline := time.Now().Add(sc.srv.authTimeout())
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	ctrl, err := sc.qc.AcceptStream(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, &core.Error{Code: qimpb.Code_AUTH_TIMEOUT, Reason: "no CONNECT within the auth timeout"}
		}
		return nil, err
	}
	sc.ctrlWriteMu.Lock()
	sc.ctrl = ctrl
	sc.ctrlWriteMu.Unlock()
	ctrl.SetReadDeadline(deadline)
	var cmd qimpb.Command
	r := bufio.NewReaderSize(ctrl, 1024)
	if _, err := qimpb.ReadFrame(r, sc.srv.Devices.Hub().MaxFrame(), nil, &cmd); err != nil {
		return nil, frameError(err)
	}
	ctrl.SetReadDeadline(time.Time{})
	if cmd.Version != qimpb.Version {
		return nil, &core.Error{Code: qimpb.Code_UNSUPPORTED_VERSION, Reason: "this server speaks protocol version 1"}
	}
	if cmd.Command != qimpb.CommandType_CONNECT {
		return nil, &core.Error{Code: qimpb.Code_PROTOCOL_VIOLATION, Reason: "the first frame must be CONNECT"}
	}
	c := &qimpb.Connect{}
	if err := proto.Unmarshal(cmd.Payload, c); err != nil {
		return nil, &core.Error{Code: qimpb.Code_BAD_REQUEST, Reason: "CONNECT does not decode"}
	}
	hub := sc.srv.Devices.Hub()
	app, err := hub.Authenticate(ctx, c)
	if err != nil {
		return nil, err
	}
	sc.logger = sc.logger.With("user", c.User, "device", c.Device)
	// The session opens before CONNECT is answered, so that a failure to
	// open it (the store cannot give the device's epoch) refuses CONNECT.
	// Pushes it starts meanwhile wait in the device's accept queue.
	sess, err = sc.srv.Devices.Open(ctx, app, c, sc, sc.logger)
	if err != nil {
		return nil, err
	}
	connected := &qimpb.Connected{
		User:       c.User,
		Device:     c.Device,
		ServerTime: time.Now().UnixMilli(),
		MaxFrame:   uint32(hub.MaxFrame()),
	}
	err = sess.Welcome(ctx, connected)
	var ok []byte
	if err == nil {
		ok, err = encodeResponse(connected)
	}
	if err == nil {
		err = sc.writeControl(ok)
	}
	if err != nil {
		// Close the connection first, so that the session's blocked
		// writes return.
		sc.qc.CloseWithError(quic.ApplicationErrorCode(qimpb.Code_INTERNAL), "CONNECT could not be answered")
		sess.Close()
		return nil, err
	}
	// Keep the reader's buffered bytes: a client may send more right away.
	sc.ctrlReader = r
	sess.Start()
	return sess, nil
}

// readControl reads the control stream after CONNECT: a DISCONNECT from the
// device closes the connection normally; anything else is a protocol
// violation.
func (sc *serverConn) readControl(sess *session.Session) {
	var cmd qimpb.Command
	_, err := qimpb.ReadFrame(sc.ctrlReader, sc.srv.Devices.Hub().MaxFrame(), nil, &cmd)
	switch {
	case err == nil && cmd.Command == qimpb.CommandType_DISCONNECT:
		// Record what the device wrote on its streams before the
		// DISCONNECT (its last acknowledgements) before closing.
		sess.DrainReaders(disconnectGrace)
		sc.qc.CloseWithError(quic.ApplicationErrorCode(qimpb.Code_CLOSED), "closed by client")
	case err == nil:
		sc.Disconnect(qimpb.Code_PROTOCOL_VIOLATION, cmd.Command.String()+" is not allowed on the control stream after CONNECT")
	case errors.Is(err, io.EOF):
		// The device finished its side of the control stream: that is a
		// close too.
		sc.qc.CloseWithError(quic.ApplicationErrorCode(qimpb.Code_CLOSED), "control stream finished")
	default:
		if code, reason := core.CodeOf(frameError(err)); code != qimpb.Code_INTERNAL {
			sc.Disconnect(code, reason)
		}
		// Otherwise the connection is ending already.
	}
}

// HandshakeComplete implements session.Conn.
func (sc *serverConn) HandshakeComplete() <-chan struct{} { return sc.qc.HandshakeComplete() }

// OpenStream implements session.Conn.
func (sc *serverConn) OpenStream(ctx context.Context) (session.Stream, error) {
	str, err := sc.qc.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	return quicStream{str}, nil
}

// readDatagrams reads the connection's QUIC datagrams until ctx ends, and
// hands those that arrive once the device is authenticated to its session
// (typing); it drops the others (keepalives, and anything before
// CONNECT), so that quic-go's queue of received datagrams stays empty.
func (sc *serverConn) readDatagrams(ctx context.Context) {
	for {
		b, err := sc.qc.ReceiveDatagram(ctx)
		if err != nil {
			return
		}
		if sess := sc.sess.Load(); sess != nil {
			sess.HandleDatagram(b)
		}
	}
}

// WriteEvent implements session.Conn.
func (sc *serverConn) WriteEvent(frame []byte) error { return sc.writeControl(frame) }

// Datagrams implements session.Conn.
func (sc *serverConn) Datagrams() bool {
	d := sc.qc.ConnectionState().SupportsDatagrams
	return d.Local && d.Remote
}

// SendDatagram implements session.Conn.
func (sc *serverConn) SendDatagram(b []byte) error { return sc.qc.SendDatagram(b) }

// Disconnect implements session.Conn: it sends DISCONNECT on the control
// stream (when there is one) and closes the connection with code. It does
// not block: the frame is written, and the connection closed, by a
// goroutine of the connection (see sendDisconnect).
func (sc *serverConn) Disconnect(code qimpb.Code, reason string) {
	sc.disconnectOnce.Do(func() {
		sc.mu.Lock()
		defer sc.mu.Unlock()
		if sc.finished {
			// serve is returning: there is no session left to tell.
			sc.qc.CloseWithError(quic.ApplicationErrorCode(code), reason)
			return
		}
		sc.wg.Go(func() { sc.sendDisconnect(code, reason) })
	})
}

// sendDisconnect writes DISCONNECT{code, reason} on the control stream,
// finishes the stream, gives the frame a bounded moment to reach the
// device (see lingerTime), and closes the connection with code.
// CloseWithError discards stream data quic-go has not sent yet, and a lost
// packet is sent again only after a probe timeout, so closing at once
// would lose the frame. quic-go does not tell when stream data is
// acknowledged (quic-go issue #3291), so the wait ends when the device
// closes the connection (the Go client does when it has read the frame),
// when the server closes it (Server.Close, also at the end of Shutdown's
// grace), or after the bound. It runs in a goroutine of sc.wg.
func (sc *serverConn) sendDisconnect(code qimpb.Code, reason string) {
	frame, err := qimpb.EncodeFrame(qimpb.CommandType_DISCONNECT, &qimpb.Disconnect{Code: int32(code), Reason: reason})
	if err == nil {
		err = sc.finishControl(frame)
	}
	if err == nil {
		t := time.NewTimer(lingerTime(sc.qc.ConnectionStats().SmoothedRTT))
		select {
		case <-t.C:
		case <-sc.qc.Context().Done():
		}
		t.Stop()
	}
	sc.qc.CloseWithError(quic.ApplicationErrorCode(code), reason)
}

// lingerTime is how long a DISCONNECT is given to reach the device before
// the connection is closed: three smoothed round trips, which leaves room
// for one retransmission of a lost packet, but at least minLinger (on a
// fast network the device's delayed acknowledgement, 25 ms by default, and
// a busy scheduler dominate) and at most maxLinger.
func lingerTime(srtt time.Duration) time.Duration {
	return min(max(3*srtt, minLinger), maxLinger)
}

// The bounds of lingerTime.
const (
	minLinger = 100 * time.Millisecond
	maxLinger = time.Second
)

// writeControl writes a frame on the control stream, if it is open, with a
// deadline so that a device that does not read cannot hold it.
func (sc *serverConn) writeControl(frame []byte) error {
	sc.ctrlWriteMu.Lock()
	defer sc.ctrlWriteMu.Unlock()
	if sc.ctrl == nil {
		return errNoControl
	}
	sc.ctrl.SetWriteDeadline(time.Now().Add(time.Second))
	_, err := sc.ctrl.Write(frame)
	return err
}

// finishControl writes the last frame on the control stream, as
// writeControl does, and finishes the server's side of the stream (FIN).
func (sc *serverConn) finishControl(frame []byte) error {
	sc.ctrlWriteMu.Lock()
	defer sc.ctrlWriteMu.Unlock()
	if sc.ctrl == nil {
		return errNoControl
	}
	sc.ctrl.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := sc.ctrl.Write(frame); err != nil {
		return err
	}
	return sc.ctrl.Close()
}

var errNoControl = errors.New("quicsrv: no control stream")

// disconnectGrace bounds how long a DISCONNECT waits for the device's
// streams to finish.
const disconnectGrace = time.Second

// frameError maps a frame read error to the code the device is told.
func frameError(err error) error {
	switch {
	case errors.Is(err, qimpb.ErrFrameTooLarge):
		return &core.Error{Code: qimpb.Code_FRAME_TOO_LARGE, Reason: err.Error()}
	case errors.Is(err, qimpb.ErrBadFrame), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return &core.Error{Code: qimpb.Code_BAD_REQUEST, Reason: "malformed frame"}
	case isTimeout(err):
		return &core.Error{Code: qimpb.Code_AUTH_TIMEOUT, Reason: "no CONNECT within the auth timeout"}
	}
	return err
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

func encodeResponse(payload proto.Message) ([]byte, error) {
	b, err := proto.Marshal(payload)
	if err != nil {
		return nil, err
	}
	return qimpb.EncodeFrame(qimpb.CommandType_RESPONSE, &qimpb.Response{Code: int32(qimpb.Code_OK), Payload: b})
}

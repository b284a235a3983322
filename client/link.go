package client

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/proto"

	qimpb "github.com/qim-im/qim/proto"
)

// link is one QUIC connection of a Client and everything that lives and
// dies with it: the control stream, the conversation streams and the UDP
// sockets. A Client has one link at a time; a reconnection makes a new one.
type link struct {
	// Static after dialLink.
	c     *Client
	node  int // index in c.addrs of the node the link connects to
	conn  *quic.Conn
	paths *pathSet
	log   *slog.Logger

	// rejectHandled is closed by connect once CONNECT was sent again after
	// the server rejected 0-RTT, or once connect has returned. Requests
	// whose streams were lost to the rejection wait for it.
	rejectHandled chan struct{}
	rejectOnce    sync.Once

	// openMu is held for reading while a request opens a stream, and for
	// writing by connect while it opens the control stream again after a
	// 0-RTT rejection, so that the control stream is stream 0 again.
	openMu sync.RWMutex

	// wg counts the link's goroutines (control reader, stream acceptor,
	// stream readers and writers). Add is called only under c.mu while
	// !stopped, so shutdown's Wait never races with it.
	wg sync.WaitGroup

	// Guarded by c.mu.
	ctl         *quic.Stream // written by connect, then by Close only
	established bool         // the server accepted CONNECT
	connected   *qimpb.Connected
	stopped     bool // set by shutdown: no new goroutines
	reasonSet   bool
	reason      error       // why the link ended, once known
	aborted     bool        // the client closed it for a protocol error
	typing      chan []byte // typing datagrams for sendTyping; nil without FEATURE_DATAGRAMS (typing.go)
	streams     map[Peer]*stream
	opening     map[Peer]chan struct{}
	live        map[*stream]bool
	mine        list.List // of *stream the client opened, most recently used first (streamcache.go)
	// delivering counts readers between deciding to deliver a message and
	// queueing its acknowledgement. After drainAcks sets draining it only
	// decreases, and quiet is closed when it reaches zero.
	delivering int
	draining   bool
	drain      chan struct{} // closed when draining starts: deliver no more
	quiet      chan struct{}
}

// errClosing is the end reason of a link closed by Close.
var errClosing = errors.New("qim: client closing")

// errBackground is the end reason of a link closed by Background.
var errBackground = errors.New("qim: client in the background")

// dialLink opens a socket, dials node (an index in c.addrs) and sends
// CONNECT. With early, the link is installed as the client's current one as
// soon as CONNECT is written, so that waiting requests go out with it (in
// 0-RTT when the session cache has a ticket); otherwise only once the
// server accepted it. On success the link's control reader and stream
// acceptor are running.
func (c *Client) dialLink(ctx context.Context, node int, early bool) (*link, error) {
	addr := c.addrs[node]
	raddr, err := resolve(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("qim: dial %s: %w", addr, err)
	}
	c.mu.Lock()
	laddr := c.localAddr
	c.mu.Unlock()
	paths, tr, err := newPathSet(laddr, raddr, c.cfg.ListenPacket)
	if err != nil {
		return nil, err
	}
	conn, err := tr.DialEarly(ctx, raddr, c.tlsConf, c.quicConf)
	if err != nil {
		paths.close()
		return nil, fmt.Errorf("qim: dial %s: %w", addr, err)
	}
	paths.conn = conn
	log := c.log
	if len(c.addrs) > 1 {
		log = log.With("server", addr)
	}
	l := &link{
		c:             c,
		node:          node,
		conn:          conn,
		paths:         paths,
		log:           log,
		rejectHandled: make(chan struct{}),
		streams:       make(map[Peer]*stream),
		opening:       make(map[Peer]chan struct{}),
		live:          make(map[*stream]bool),
		drain:         make(chan struct{}),
	}
	fr, err := l.connect(ctx, early)
	if err != nil {
		l.finish(err) // before closing: requests sent early see err
		conn.CloseWithError(quic.ApplicationErrorCode(qimpb.Code_CLOSED), "connect failed")
		c.uninstall(l)
		l.shutdown()
		return nil, err
	}
	again := c.me != ""
	if !again {
		c.identify(l.connected) // the first connection, in Dial
	}
	c.learnConnected(l.connected, again)
	datagrams := c.quicConf.EnableDatagrams && granted(l.connected, qimpb.Feature_FEATURE_DATAGRAMS)
	c.mu.Lock()
	l.established = true
	l.wg.Add(3)
	if datagrams {
		l.typing = make(chan []byte, typingQueue)
		l.wg.Add(2)
	}
	c.mu.Unlock()
	go l.readControl(fr)
	go l.acceptStreams()
	go l.keepAlive()
	if datagrams {
		go l.readDatagrams()
		go l.sendTyping()
	}
	return l, nil
}

// connect opens the control stream, sends CONNECT and reads the answer. It
// returns the control stream's frame reader, which may hold buffered bytes.
func (l *link) connect(ctx context.Context, early bool) (*frameReader, error) {
	defer l.rejectOnce.Do(func() { close(l.rejectHandled) })
	// Cancelling ctx closes the connection, which unblocks the reads below.
	stop := context.AfterFunc(ctx, func() {
		l.conn.CloseWithError(quic.ApplicationErrorCode(qimpb.Code_CLOSED), "dial cancelled")
	})
	fr, err := l.handshake(ctx, early)
	if !stop() {
		return nil, fmt.Errorf("qim: connect: %w", ctx.Err())
	}
	if err != nil {
		return nil, err
	}
	// The answer came in 1-RTT packets, so the handshake is complete; wait
	// all the same before asking whether 0-RTT was used.
	select {
	case <-l.conn.HandshakeComplete():
	case <-ctx.Done():
		return nil, fmt.Errorf("qim: connect: %w", ctx.Err())
	}
	return fr, nil
}

func (l *link) handshake(ctx context.Context, early bool) (*frameReader, error) {
	c := l.c
	c.mu.Lock() // TokenFunc may have changed the token
	frame, err := qimpb.EncodeFrame(qimpb.CommandType_CONNECT, c.connectMsg)
	c.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("qim: %w", err)
	}
	for rejected := false; ; rejected = true {
		ctl, err := l.openControl(ctx, rejected)
		if err != nil {
			if !rejected && errors.Is(err, quic.Err0RTTRejected) {
				continue
			}
			return nil, l.connectError("open control stream", err)
		}
		_, err = ctl.Write(frame)
		if rejected {
			l.rejectOnce.Do(func() { close(l.rejectHandled) })
		}
		if err != nil {
			if !rejected && errors.Is(err, quic.Err0RTTRejected) {
				continue
			}
			return nil, l.connectError("send CONNECT", err)
		}
		if early && !rejected {
			c.install(l)
		}
		fr := newFrameReader(ctl, c.maxFrame)
		var cmd qimpb.Command
		if err := fr.next(&cmd); err != nil {
			if !rejected && errors.Is(err, quic.Err0RTTRejected) {
				l.log.Debug("server rejected 0-RTT: sending CONNECT again")
				continue
			}
			return nil, l.connectError("read CONNECT answer", err)
		}
		connected, err := answer(&cmd)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		l.connected = connected
		c.mu.Unlock()
		return fr, nil
	}
}

// openControl opens the control stream. After a 0-RTT rejection it first
// makes the connection usable again, holding openMu so that no request
// takes stream 0.
func (l *link) openControl(ctx context.Context, rejected bool) (*quic.Stream, error) {
	if rejected {
		l.openMu.Lock()
		defer l.openMu.Unlock()
		if _, err := l.conn.NextConnection(ctx); err != nil {
			return nil, err
		}
	}
	if raceDetector {
		// quic-go v0.65 reads the peer's transport parameters without
		// synchronisation when a stream is opened while a 0-RTT handshake
		// completes (quic-go #4303), which the race detector reports now
		// and then. Under it, the first stream waits for the handshake:
		// 0-RTT is still accepted, CONNECT just goes in 1-RTT packets.
		select {
		case <-l.conn.HandshakeComplete():
		case <-l.conn.Context().Done(): // the handshake failed or timed out
			return nil, context.Cause(l.conn.Context())
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	ctl, err := l.conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	l.c.mu.Lock()
	l.ctl = ctl
	l.c.mu.Unlock()
	return ctl, nil
}

// answer decodes the server's answer to CONNECT.
func answer(cmd *qimpb.Command) (*qimpb.Connected, error) {
	if cmd.GetVersion() != qimpb.Version {
		return nil, fmt.Errorf("qim: CONNECT answer has version %d", cmd.GetVersion())
	}
	switch cmd.GetCommand() {
	case qimpb.CommandType_DISCONNECT:
		var d qimpb.Disconnect
		if err := proto.Unmarshal(cmd.GetPayload(), &d); err != nil {
			return nil, fmt.Errorf("qim: decode DISCONNECT: %w", err)
		}
		return nil, errorOf(d.GetCode(), d.GetReason())
	case qimpb.CommandType_RESPONSE:
		var resp qimpb.Response
		if err := proto.Unmarshal(cmd.GetPayload(), &resp); err != nil {
			return nil, fmt.Errorf("qim: decode CONNECT response: %w", err)
		}
		if resp.GetCode() != int32(qimpb.Code_OK) {
			return nil, errorOf(resp.GetCode(), resp.GetReason())
		}
		connected := new(qimpb.Connected)
		if err := proto.Unmarshal(resp.GetPayload(), connected); err != nil {
			return nil, fmt.Errorf("qim: decode Connected: %w", err)
		}
		return connected, nil
	default:
		return nil, fmt.Errorf("qim: unexpected %v in answer to CONNECT", cmd.GetCommand())
	}
}

// connectError describes a failure while connecting; a connection the
// server closed with a qim code becomes that *Error.
func (l *link) connectError(op string, err error) error {
	if isConnError(err) {
		var qe *Error
		if reason := closeReason(err); errors.As(reason, &qe) {
			return qe
		}
	}
	return fmt.Errorf("qim: %s: %w", op, err)
}

// readControl reads the control stream until the connection ends. An
// EVENT is delivered (events.go); a DISCONNECT from the server ends the
// link with that code; anything else is a protocol violation. It runs in
// its own goroutine.
func (l *link) readControl(fr *frameReader) {
	defer l.wg.Done()
	var (
		cmd qimpb.Command
		err error
	)
	for {
		if err = fr.next(&cmd); err != nil {
			break
		}
		if cmd.GetCommand() == qimpb.CommandType_EVENT {
			l.event(&cmd)
			continue
		}
		if cmd.GetCommand() != qimpb.CommandType_DISCONNECT {
			l.abort(qimpb.Code_PROTOCOL_VIOLATION, fmt.Errorf("qim: unexpected %v on the control stream", cmd.GetCommand()))
			return
		}
		var d qimpb.Disconnect
		if err := proto.Unmarshal(cmd.GetPayload(), &d); err != nil {
			l.abort(qimpb.Code_BAD_REQUEST, fmt.Errorf("qim: decode DISCONNECT: %w", err))
			return
		}
		// The server closes the connection right after DISCONNECT; give
		// in-flight answers that chance, then close it ourselves.
		l.log.Debug("disconnected by server", "code", qimpb.Code(d.GetCode()), "reason", d.GetReason())
		l.finish(errorOf(d.GetCode(), d.GetReason()))
		t := time.NewTimer(closeGrace)
		defer t.Stop()
		select {
		case <-l.conn.Context().Done():
		case <-t.C:
			l.conn.CloseWithError(quic.ApplicationErrorCode(d.GetCode()), d.GetReason())
		}
		return
	}
	switch {
	case isConnError(err):
		l.finish(closeReason(err))
	case errors.Is(err, qimpb.ErrFrameTooLarge):
		l.abort(qimpb.Code_FRAME_TOO_LARGE, fmt.Errorf("qim: control stream: %w", err))
	default:
		l.abort(qimpb.Code_PROTOCOL_VIOLATION, fmt.Errorf("qim: control stream: %w", err))
	}
}

// acceptStreams accepts the streams the server opens to push messages, until
// the connection ends. It runs in its own goroutine.
func (l *link) acceptStreams() {
	defer l.wg.Done()
	for {
		qs, err := l.conn.AcceptStream(l.conn.Context())
		if err != nil {
			return
		}
		l.c.mu.Lock()
		if !l.stopped {
			l.startStream(qs, Peer{}, false)
		}
		l.c.mu.Unlock()
	}
}

// finish records reason as the end of the link unless an earlier one is
// known. It reports whether reason was recorded.
func (l *link) finish(reason error) bool {
	l.c.mu.Lock()
	defer l.c.mu.Unlock()
	if l.reasonSet {
		return false
	}
	l.reasonSet, l.reason = true, reason
	return true
}

// abort ends the link because of a local protocol error, closing the
// connection with code. The client does not reconnect after it.
func (l *link) abort(code qimpb.Code, err error) {
	l.log.Warn("closing connection", "code", code, "err", err)
	l.c.mu.Lock()
	l.aborted = true
	l.c.mu.Unlock()
	l.finish(err)
	l.conn.CloseWithError(quic.ApplicationErrorCode(code), err.Error())
}

// lost returns the error of an operation that failed because the
// connection ended.
func (l *link) lost(err error) error {
	l.finish(closeReason(err))
	l.c.mu.Lock()
	defer l.c.mu.Unlock()
	return &lostError{reason: l.reason}
}

// shutdown waits until every goroutine of the link has returned and closes
// its transports and sockets. The connection must have ended. It is called
// by the goroutine that dialed or supervises the link.
func (l *link) shutdown() {
	<-l.conn.Context().Done()
	l.finish(closeReason(context.Cause(l.conn.Context())))
	l.c.mu.Lock()
	l.stopped = true
	l.c.mu.Unlock()
	l.wg.Wait()
	l.paths.close()
}

// endReason returns why the link ended and whether the client aborted it.
func (l *link) endReason() (error, bool) {
	l.c.mu.Lock()
	defer l.c.mu.Unlock()
	return l.reason, l.aborted
}

// drainAcks stops deliveries, waits for the readers that delivered a
// message to queue its acknowledgement, then for every stream's writer to
// write what it has queued and finish the stream, or until deadline fires.
func (l *link) drainAcks(deadline <-chan time.Time) {
	l.c.mu.Lock()
	if l.draining {
		l.c.mu.Unlock()
		return
	}
	l.draining = true
	close(l.drain)
	quiet := make(chan struct{})
	if l.delivering == 0 {
		close(quiet)
	} else {
		l.quiet = quiet
	}
	streams := make([]*stream, 0, len(l.live))
	for s := range l.live {
		streams = append(streams, s)
	}
	l.c.mu.Unlock()

	select {
	case <-quiet:
	case <-deadline:
		return
	}
	for _, s := range streams {
		if !s.flush(deadline, true) {
			return
		}
	}
}

// beginDelivery reports whether a reader may deliver a message; if so, the
// reader calls endDelivery once the acknowledgement is queued or dropped.
func (l *link) beginDelivery() bool {
	l.c.mu.Lock()
	defer l.c.mu.Unlock()
	if l.draining {
		return false
	}
	l.delivering++
	return true
}

// endDelivery ends what beginDelivery began.
func (l *link) endDelivery() {
	l.c.mu.Lock()
	defer l.c.mu.Unlock()
	l.delivering--
	if l.delivering == 0 && l.quiet != nil {
		close(l.quiet)
		l.quiet = nil
	}
}

// sendDisconnect writes DISCONNECT{CLOSED} on the control stream.
func (l *link) sendDisconnect() error {
	l.c.mu.Lock()
	ctl := l.ctl
	l.c.mu.Unlock()
	frame, err := qimpb.EncodeFrame(qimpb.CommandType_DISCONNECT,
		&qimpb.Disconnect{Code: int32(qimpb.Code_CLOSED), Reason: "client closed"})
	if err != nil {
		return err
	}
	ctl.SetWriteDeadline(time.Now().Add(closeGrace))
	_, err = ctl.Write(frame)
	return err
}

// quietClose ends the link without DISCONNECT, after giving the
// acknowledgements of delivered messages a moment to reach the server, and
// closes the connection with code CLOSED and reason.
func (l *link) quietClose(why error, reason string) {
	if l.finish(why) && l.isEstablished() {
		deadline := time.NewTimer(closeGrace)
		l.drainAcks(deadline.C)
		deadline.Stop()
		// What is written is only queued: let it reach the server.
		rtt := l.conn.ConnectionStats().SmoothedRTT
		time.Sleep(min(2*rtt+5*time.Millisecond, closeGrace))
	}
	l.conn.CloseWithError(quic.ApplicationErrorCode(qimpb.Code_CLOSED), reason)
}

func (l *link) isEstablished() bool {
	l.c.mu.Lock()
	defer l.c.mu.Unlock()
	return l.established
}

// lostError is the error of an operation on a link whose connection ended.
// Client.do turns it into a retry on the next connection or into the
// error its caller sees.
type lostError struct{ reason error }

func (e *lostError) Error() string {
	if e.reason == nil {
		return ErrClosed.Error()
	}
	return e.reason.Error()
}

func (e *lostError) Unwrap() error { return e.reason }

// errRejected is the error of an operation on a stream that the server's
// rejection of 0-RTT closed. Nothing sent on it reached the server.
var errRejected = errors.New("qim: 0-RTT rejected")

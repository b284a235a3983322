package client

import (
	"container/list"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/proto"

	qimpb "github.com/qim-im/qim/proto"
)

// maxAttempts is how many streams a retryable request is tried on.
const maxAttempts = 3

// stream is one conversation stream, or the general stream for CONTACT and
// GROUP requests. Its reader goroutine is the only one to Read, and its
// writer goroutine the only one to Write and Close the send side.
type stream struct {
	// Static after startStream.
	l       *link
	qs      *quic.Stream
	log     *slog.Logger
	general bool          // the stream for CONTACT and GROUP requests
	wq      chan outFrame // frames for writeLoop
	done    chan struct{} // closed by fail

	// unacked is the highest seq pushed on the stream, delivered, and not
	// acknowledged yet. Only readLoop uses it: acknowledgements are
	// cumulative, so it sends one for every frame it has in hand, when its
	// buffer runs dry (PROTOCOL.md 5.3).
	unacked uint64
	holding bool // ackLater keeps a delivery open until unacked is queued

	// Guarded by l.c.mu.
	key  Peer          // conversation the stream is registered under; zero until bound
	elem *list.Element // in l.mine while the client may still use it; nil for a stream the server opened

	// Guarded by mu.
	mu       sync.Mutex
	nextID   uint64
	pending  map[uint64]chan result
	err      error // why the stream ended; set once by fail
	graceful bool  // the server finished the stream: FIN ours too
	ending   bool  // the client finished the idle stream (streamcache.go): no new requests
}

// outFrame is an encoded frame waiting for writeLoop, or a marker.
type outFrame struct {
	b       []byte
	ack     bool          // an acknowledgement: still written after the server's FIN
	flushed chan struct{} // a marker: closed once the frames before it are written
	fin     bool          // with flushed: finish the stream after them
	end     bool          // a marker: finish the idle stream, and keep reading (streamcache.go)
}

type result struct {
	resp *qimpb.Response
	err  error
}

// startStream wraps qs and starts its reader and writer. key is the
// conversation of a stream the client opens for it, zero for the general
// stream and for a stream the server opened. l.c.mu must be held and
// l.stopped must be false.
func (l *link) startStream(qs *quic.Stream, key Peer, general bool) *stream {
	s := &stream{
		l:       l,
		qs:      qs,
		log:     l.log.With("stream", int64(qs.StreamID())),
		general: general,
		wq:      make(chan outFrame, 16),
		done:    make(chan struct{}),
		key:     key,
		pending: make(map[uint64]chan result),
	}
	if general || key != (Peer{}) {
		l.streams[key] = s
		s.elem = l.mine.PushFront(s)
	}
	l.live[s] = true
	l.wg.Add(2)
	go s.readLoop()
	go s.writeLoop()
	return s
}

// streamFor returns the stream registered for key (Peer{}: the general
// stream), opening one if there is none. Concurrent callers for one key
// wait for a single opening.
func (l *link) streamFor(ctx context.Context, key Peer) (*stream, error) {
	c := l.c
	for {
		c.mu.Lock()
		s, stopped, opening := l.streams[key], l.stopped, l.opening[key]
		if s != nil && s.elem != nil {
			l.mine.MoveToFront(s.elem)
		}
		if s == nil && !stopped && opening == nil {
			opening = make(chan struct{})
			l.opening[key] = opening
			c.mu.Unlock()
			s, err := l.open(ctx, key)
			c.mu.Lock()
			delete(l.opening, key)
			close(opening)
			c.mu.Unlock()
			return s, err
		}
		c.mu.Unlock()
		switch {
		case s != nil:
			return s, nil
		case stopped:
			return nil, l.lost(net.ErrClosed)
		}
		select {
		case <-opening:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// open opens a stream for key and starts it.
func (l *link) open(ctx context.Context, key Peer) (*stream, error) {
	l.makeRoom()
	// Opening may wait for stream credit from the server: not under c.mu.
	l.openMu.RLock()
	qs, err := l.conn.OpenStreamSync(ctx)
	l.openMu.RUnlock()
	if err != nil {
		switch {
		case isConnError(err):
			return nil, l.lost(err)
		case errors.Is(err, quic.Err0RTTRejected):
			return nil, errRejected
		}
		return nil, fmt.Errorf("qim: open stream: %w", err)
	}
	l.c.mu.Lock()
	defer l.c.mu.Unlock()
	if s := l.streams[key]; s != nil || l.stopped {
		// The server bound one of its streams to key meanwhile, or the
		// connection ended. The new stream was never written to: finish it.
		qs.CancelRead(quic.StreamErrorCode(qimpb.Code_CLOSED))
		qs.Close()
		if s == nil {
			return nil, &lostError{reason: l.reason}
		}
		return s, nil
	}
	return l.startStream(qs, key, key == (Peer{})), nil
}

// do sends req on the stream of key and waits for its RESPONSE. A non-OK
// response is returned as an *Error. When retry is set, a request whose
// stream ended before the answer is sent again on a new stream, and a
// request whose connection ended is sent again on the next connection;
// otherwise the request is sent only once the handshake is complete (never
// in 0-RTT, which an attacker could replay).
func (c *Client) do(ctx context.Context, key Peer, req *qimpb.Request, retry bool) (*qimpb.Response, error) {
	for attempt := 1; ; {
		l, err := c.linkFor(ctx, !retry)
		if err != nil {
			return nil, err
		}
		s, err := l.streamFor(ctx, key)
		var resp *qimpb.Response
		if err == nil {
			resp, err = s.request(ctx, req)
		}
		if err == nil {
			return resp, nil
		}
		var lost *lostError // escapes (errors.As): declared only on failure
		switch {
		case errors.Is(err, errRejected):
			// Nothing reached the server: send it again once CONNECT
			// has been sent again, whatever the request.
			if err := l.awaitRejectHandled(ctx); err != nil {
				return nil, err
			}
			continue
		case errors.As(err, &lost):
			if err := c.afterLoss(lost, retry); err != nil {
				return nil, err
			}
			l.log.Debug("retrying request on the next connection", "type", req.GetType(), "err", err)
			continue
		case (retry || errors.Is(err, errUnread)) && attempt < maxAttempts && errors.Is(err, ErrStreamEnded):
			// errUnread: the server did not run it, whatever it is.
			attempt++
			s.log.Debug("retrying request on a new stream", "type", req.GetType(), "err", err)
			continue
		}
		return nil, err
	}
}

// awaitRejectHandled waits until connect has sent CONNECT again after a
// 0-RTT rejection, or the connection ended.
func (l *link) awaitRejectHandled(ctx context.Context) error {
	select {
	case <-l.rejectHandled:
		return nil
	case <-l.conn.Context().Done():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// bind registers s, a stream the server opened, as the stream of conv when
// the client has none yet.
func (l *link) bind(s *stream, conv Peer) {
	l.c.mu.Lock()
	defer l.c.mu.Unlock()
	if s.general || s.key != (Peer{}) {
		return
	}
	s.key = conv
	if l.streams[conv] == nil {
		l.streams[conv] = s
	}
}

// forget removes s from the stream map.
func (l *link) forget(s *stream) {
	l.c.mu.Lock()
	defer l.c.mu.Unlock()
	if l.streams[s.key] == s {
		delete(l.streams, s.key)
	}
	if s.elem != nil {
		l.mine.Remove(s.elem)
		s.elem = nil
	}
	delete(l.live, s)
}

// advance records seq as delivered for conv and reports whether it is new,
// that is above the highest seq delivered so far, and the previous highest.
func (c *Client) advance(conv Peer, seq uint64) (prev uint64, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	prev = c.highest[conv]
	if seq <= prev {
		return prev, false
	}
	c.highest[conv] = seq
	return prev, true
}

// unadvance undoes advance for a message that was not delivered after
// all, so that it is delivered when the server sends it again.
func (c *Client) unadvance(conv Peer, seq, prev uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if seq > 0 && c.highest[conv] == seq {
		c.highest[conv] = prev
	}
}

// request sends req with the next request_id of s and waits for the answer.
func (s *stream) request(ctx context.Context, req *qimpb.Request) (*qimpb.Response, error) {
	s.mu.Lock()
	if s.err != nil || s.ending {
		err := s.err
		if s.ending {
			err = errUnread // never sent: Client.do sends it on a new stream
		}
		s.mu.Unlock()
		return nil, err
	}
	s.nextID++
	id := s.nextID
	ch := make(chan result, 1)
	s.pending[id] = ch
	s.mu.Unlock()

	req.RequestId = id
	frame, err := qimpb.EncodeFrame(qimpb.CommandType_REQUEST, req)
	if err == nil {
		err = s.l.c.checkSize(frame)
	}
	if err == nil {
		err = s.send(ctx, outFrame{b: frame})
	}
	if err != nil {
		s.abandon(id)
		return nil, err
	}
	select {
	case r := <-ch:
		return r.resp, r.err
	case <-ctx.Done():
		s.abandon(id)
		return nil, ctx.Err()
	}
}

// abandon forgets the pending request id; a late answer is dropped.
func (s *stream) abandon(id uint64) {
	s.mu.Lock()
	delete(s.pending, id)
	s.mu.Unlock()
}

// checkSize refuses a frame the server would refuse for its size.
func (c *Client) checkSize(frame []byte) error {
	n, k := binary.Uvarint(frame)
	if limit := c.sendLimit.Load(); k > 0 && n > uint64(limit) {
		return fmt.Errorf("qim: request of %d bytes: %w (server limit %d)", n, qimpb.ErrFrameTooLarge, limit)
	}
	return nil
}

// send queues f for writeLoop.
func (s *stream) send(ctx context.Context, f outFrame) error {
	select {
	case s.wq <- f:
		return nil
	case <-s.done:
		return s.stoppedErr()
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *stream) stoppedErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// writeLoop writes queued frames until the stream ends. After the server's
// FIN it writes the acknowledgements still queued and finishes the stream.
// It runs in its own goroutine.
func (s *stream) writeLoop() {
	defer s.l.wg.Done()
	// finished: our send side is finished (an idle stream the client
	// ended) or the server stopped reading (STOP_SENDING): frames are
	// dropped until the reader reads the server's FIN and fails the
	// requests left (errUnread), which were not run.
	finished := false
	for {
		select {
		case f := <-s.wq:
			if f.end {
				s.qs.Close()
				finished = true
				continue
			}
			if f.flushed != nil {
				if f.fin {
					// Closing: finish the stream, so that the server
					// reads everything we wrote, acknowledgements
					// included, before it closes the connection. Never
					// reset it afterwards: that could discard them.
					s.qs.Close()
					s.mu.Lock()
					s.graceful = true
					s.mu.Unlock()
					close(f.flushed)
					s.fail(ErrClosed)
					return
				}
				close(f.flushed)
				continue
			}
			if finished {
				continue
			}
			if _, err := s.qs.Write(f.b); err != nil {
				var se *quic.StreamError
				if errors.As(err, &se) && se.Remote {
					// STOP_SENDING: the server answers what it read
					// and finishes the stream; the reader reads on.
					finished = true
					continue
				}
				s.fail(s.ioError("write", err))
				return
			}
		case <-s.done:
			s.mu.Lock()
			graceful := s.graceful
			s.mu.Unlock()
			if graceful {
				s.drainAcks()
				s.qs.Close()
			}
			return
		}
	}
}

// drainAcks writes the acknowledgements left in the queue, dropping the
// requests, which have already failed with ErrStreamEnded.
func (s *stream) drainAcks() {
	for {
		select {
		case f := <-s.wq:
			if !f.ack {
				continue // a request, already failed, or a flush marker
			}
			if _, err := s.qs.Write(f.b); err != nil {
				return
			}
		default:
			return
		}
	}
}

// readLoop reads frames until the stream ends, dispatching RESPONSEs to
// their requests and handling pushed REQUESTs. It runs in its own goroutine.
func (s *stream) readLoop() {
	defer s.l.wg.Done()
	fr := newFrameReader(s.qs, s.l.c.maxFrame)
	var cmd qimpb.Command
	defer s.releaseAck()
	for {
		if s.unacked != 0 && fr.br.Buffered() == 0 {
			err := s.respond(s.unacked, qimpb.Code_OK, "")
			s.unacked = 0
			s.releaseAck()
			if err != nil {
				s.fail(err)
				return
			}
		}
		if err := fr.next(&cmd); err != nil {
			if errors.Is(err, io.EOF) {
				s.log.Debug("stream finished by server")
				s.finishGracefully()
				return
			}
			s.fail(s.ioError("read", err))
			return
		}
		if err := s.handle(&cmd); err != nil {
			s.fail(err)
			return
		}
	}
}

// handle processes one frame from the server. An error ends the stream.
func (s *stream) handle(cmd *qimpb.Command) error {
	if cmd.GetVersion() != qimpb.Version {
		return fmt.Errorf("qim: frame of version %d", cmd.GetVersion())
	}
	switch cmd.GetCommand() {
	case qimpb.CommandType_RESPONSE:
		resp := new(qimpb.Response)
		if err := proto.Unmarshal(cmd.GetPayload(), resp); err != nil {
			return fmt.Errorf("qim: decode RESPONSE: %w", err)
		}
		return s.handleResponse(resp)
	case qimpb.CommandType_REQUEST:
		req := new(qimpb.Request)
		if err := proto.Unmarshal(cmd.GetPayload(), req); err != nil {
			return fmt.Errorf("qim: decode REQUEST: %w", err)
		}
		return s.handleRequest(req)
	default:
		return fmt.Errorf("qim: unexpected %v on a conversation stream", cmd.GetCommand())
	}
}

func (s *stream) handleResponse(resp *qimpb.Response) error {
	id := resp.GetRequestId()
	if id == 0 {
		// A refusal of the stream itself (FRAME_TOO_LARGE, BAD_REQUEST):
		// the server stops reading it.
		if resp.GetCode() == int32(qimpb.Code_OK) {
			return errors.New("qim: RESPONSE OK with request_id 0")
		}
		return errorOf(resp.GetCode(), resp.GetReason())
	}
	s.mu.Lock()
	ch := s.pending[id]
	delete(s.pending, id)
	s.mu.Unlock()
	if ch == nil {
		s.log.Debug("response to an abandoned request", "request_id", id)
		return nil
	}
	if resp.GetCode() != int32(qimpb.Code_OK) {
		ch <- result{err: errorOf(resp.GetCode(), resp.GetReason())}
	} else {
		ch <- result{resp: resp}
	}
	return nil
}

// handleRequest handles a REQUEST from the server: a pushed MESSAGE is
// delivered unless it is a duplicate, then acknowledged when stored. Once
// the link is closing (Close, Background), messages are left
// unacknowledged, to be delivered again on the next connection.
func (s *stream) handleRequest(req *qimpb.Request) error {
	if req.GetType() != qimpb.RequestType_MESSAGE {
		return s.respond(req.GetRequestId(), qimpb.Code_BAD_REQUEST, "client accepts only MESSAGE requests")
	}
	m := new(qimpb.Message)
	if err := proto.Unmarshal(req.GetPayload(), m); err != nil {
		return s.respond(req.GetRequestId(), qimpb.Code_BAD_REQUEST, "message does not decode")
	}
	c := s.l.c
	conv := ConvOf(c.me, m)
	if conv == (Peer{}) {
		return s.respond(req.GetRequestId(), qimpb.Code_BAD_REQUEST, "message has no conversation")
	}
	if !s.l.beginDelivery() {
		return nil
	}
	held := false // the delivery stays open until its acknowledgement is queued
	defer func() {
		if !held {
			s.l.endDelivery()
		}
	}()
	s.l.bind(s, conv)
	var prev uint64
	if m.GetSeq() > 0 {
		var isNew bool
		if prev, isNew = c.advance(conv, m.GetSeq()); !isNew {
			s.log.Debug("dropping duplicate", "conv", conv, "seq", m.GetSeq())
			held = s.ackLater(req.GetRequestId())
			return nil
		}
	}
	select {
	case c.msgs <- m:
	case <-s.l.drain:
		c.unadvance(conv, m.GetSeq(), prev)
		return nil
	case <-s.l.conn.Context().Done():
		c.unadvance(conv, m.GetSeq(), prev)
		return s.l.lost(context.Cause(s.l.conn.Context()))
	}
	if m.GetSeq() != 0 {
		held = s.ackLater(req.GetRequestId())
	}
	return nil
}

// ackLater records that seq is to be acknowledged when readLoop's buffer
// runs dry. The first delivery of a burst stays open (beginDelivery) until
// then, so that Close and Background, which wait for deliveries to end,
// find every acknowledgement queued. It reports whether it kept this
// delivery open.
func (s *stream) ackLater(seq uint64) bool {
	s.unacked = max(s.unacked, seq)
	if s.holding {
		return false
	}
	s.holding = true
	return true
}

// releaseAck ends the delivery ackLater kept open, if any.
func (s *stream) releaseAck() {
	if s.holding {
		s.holding = false
		s.l.endDelivery()
	}
}

// respond queues a RESPONSE to one of the server's requests.
func (s *stream) respond(id uint64, code qimpb.Code, reason string) error {
	frame, err := qimpb.EncodeFrame(qimpb.CommandType_RESPONSE,
		&qimpb.Response{Code: int32(code), Reason: reason, RequestId: id})
	if err != nil {
		return fmt.Errorf("qim: %w", err)
	}
	select {
	case s.wq <- outFrame{b: frame, ack: true}:
		return nil
	case <-s.done:
		return s.stoppedErr()
	}
}

// flush waits until the frames queued so far are written, the stream
// ends, or deadline fires, and reports whether deadline did not fire.
// With fin, the stream's send side is finished after them.
func (s *stream) flush(deadline <-chan time.Time, fin bool) bool {
	f := outFrame{flushed: make(chan struct{}), fin: fin}
	select {
	case s.wq <- f:
	case <-s.done:
		return true
	case <-deadline:
		return false
	}
	select {
	case <-f.flushed:
	case <-s.done:
	case <-deadline:
		return false
	}
	return true
}

// ioError translates a Read or Write error. A stream reset by the server
// gives ErrStreamEnded, so that the requests on it are retried; a closed
// connection gives the session's end reason.
func (s *stream) ioError(op string, err error) error {
	var se *quic.StreamError
	switch {
	case isConnError(err):
		return s.l.lost(err)
	case errors.Is(err, quic.Err0RTTRejected):
		return errRejected
	case errors.As(err, &se) && se.Remote:
		return fmt.Errorf("%w: %s: stream reset by server with code %d", ErrStreamEnded, op, se.ErrorCode)
	default:
		return fmt.Errorf("qim: %s stream %d: %w", op, s.qs.StreamID(), err)
	}
}

// finishGracefully ends s after the server's FIN: unanswered requests fail
// with errUnread (the server answers every request it reads before it
// finishes a stream, so these were not run) and writeLoop finishes our side.
func (s *stream) finishGracefully() {
	s.mu.Lock()
	s.graceful = true
	s.mu.Unlock()
	s.fail(errUnread)
}

// fail ends s with err, once: it unregisters the stream, fails its pending
// requests and, unless the server finished the stream, cancels both sides.
func (s *stream) fail(err error) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	s.err = err
	pending := s.pending
	s.pending = nil
	graceful := s.graceful
	s.mu.Unlock()

	// Unregister before failing the requests, so that their retries open
	// a new stream.
	s.l.forget(s)
	close(s.done)
	for _, ch := range pending {
		ch <- result{err: err}
	}
	if !graceful {
		var lost *lostError
		if !errors.Is(err, ErrStreamEnded) && !errors.Is(err, errRejected) && !errors.As(err, &lost) {
			s.log.Debug("stream failed", "err", err)
		}
		code := streamCode(err)
		s.qs.CancelRead(code)
		s.qs.CancelWrite(code)
	}
}

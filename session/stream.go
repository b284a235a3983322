package session

import (
	"bufio"
	"container/list"
	"context"
	"errors"
	"io"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/core"
	qimpb "github.com/qim-im/qim/proto"
)

// outQueue bounds the frames waiting for a stream's writer. A full queue
// blocks whoever feeds it (the stream's own reader, or its pusher), never
// another conversation.
const outQueue = 128

// convStream is one conversation stream of a session, opened by either
// side. Its reader goroutine runs requests and takes acknowledgements; its
// writer goroutine is the only one that writes to the stream.
type convStream struct {
	// Static after construction.
	s    *Session
	str  Stream
	out  chan outFrame
	done chan struct{} // closed when the writer stops

	// conv is set before start for a stream the server opens, otherwise by
	// the reader goroutine (bindTo); only the reader reads it afterwards.
	conv string
	// pusher is the pusher using this stream for pushes, if any.
	pusher atomic.Pointer[pusher]

	// byServer is set when the server opened the stream (streams.go).
	// Static after construction.
	byServer bool
	// The stream's place in the session's stream cache (streams.go).
	// Guarded by s.streams.mu.
	elem     *list.Element // in s.streams.opened or s.streams.peer; nil once ending or done
	lastUse  time.Time     // when a frame was last read or queued
	handling bool          // the reader is running a request
	ending   bool          // the server finished the stream: requests read now are not run
}

// outFrame is one frame for the writer: encoded already, the response to a
// message still being committed, or the response to an unstored message.
// The writer encodes responses straight into its buffer. The zero outFrame
// finishes the stream.
type outFrame struct {
	frame []byte
	pend  *core.Pending // if set, the response is built when it completes
	sent  bool          // if set, the response to an unstored message accepted at ts
	ts    int64
	reqID uint64
	cost  charge // what frame holds of the device's budget; the writer gives it back
}

// fin reports whether f is the zero outFrame, which finishes the stream.
func (f *outFrame) fin() bool { return f.frame == nil && f.pend == nil && !f.sent }

func (s *Session) newConvStream(str Stream, byServer bool) *convStream {
	return &convStream{
		s:        s,
		str:      str,
		out:      make(chan outFrame, outQueue),
		done:     make(chan struct{}),
		byServer: byServer,
	}
}

// start adds the stream to the session's stream cache and runs its reader
// and writer in the session's WaitGroup.
func (cs *convStream) start() {
	cs.s.addStream(cs)
	cs.s.wg.Go(cs.writeLoop)
	cs.s.readerStarted()
	cs.s.wg.Go(func() {
		defer cs.s.readerDone()
		cs.readLoop()
	})
}

// send queues a frame for the writer. Once the frame is queued, its charge
// belongs to the writer, which gives it back when it has written it (or
// drainQueued does, when the writer has stopped).
func (cs *convStream) send(ctx context.Context, f outFrame) error {
	if !f.fin() {
		cs.s.touchStream(cs)
	}
	select {
	case cs.out <- f:
		select {
		case <-cs.done:
			// The writer may have stopped before it took f.
			cs.drainQueued()
		default:
		}
		return nil
	case <-cs.done:
		return errStreamDone
	case <-ctx.Done():
		return ctx.Err()
	}
}

// drainQueued gives back the charges of frames left in the queue after the
// writer stopped.
func (cs *convStream) drainQueued() {
	for {
		select {
		case f := <-cs.out:
			cs.s.mem.give(f.cost)
		default:
			return
		}
	}
}

var errStreamDone = errors.New("session: stream closed")

// readLoop reads frames until the stream or the session ends.
func (cs *convStream) readLoop() {
	ctx := cs.s.ctx
	r := bufio.NewReaderSize(cs.str, 4096)
	var buf []byte
	// cmd, req and resp are reused for every frame: nothing keeps them (a
	// message is decoded into a new Message of its own).
	var (
		cmd  qimpb.Command
		req  qimpb.Request
		resp qimpb.Response
	)
	// Acknowledgements are recorded as they come and written to the store
	// once per burst: when the read buffer runs dry, and when the reader
	// ends. The reader, not the pusher, writes them, so that a device that
	// sends DISCONNECT after its last acknowledgements (the session drains
	// its readers) finds its cursor written when it connects again.
	defer func() {
		if p := cs.pusher.Load(); p != nil {
			p.persistAcked(ctx)
		}
	}()
	for {
		if r.Buffered() == 0 {
			if p := cs.pusher.Load(); p != nil {
				p.persistAcked(ctx)
			}
		}
		var err error
		buf, err = qimpb.ReadFrame(r, cs.s.dev.maxFrame, buf, &cmd)
		if err != nil {
			cs.readFailed(err)
			return
		}
		if cmd.Version != qimpb.Version {
			cs.respond(ctx, 0, core.Errorf(qimpb.Code_UNSUPPORTED_VERSION, "protocol version %d is not supported; this server speaks %d", cmd.Version, qimpb.Version), nil)
			continue
		}
		switch cmd.Command {
		case qimpb.CommandType_REQUEST:
			if !cs.beginRequest() {
				// The server finished this stream: the request is not
				// run, and the device sends it again on another stream
				// (PROTOCOL.md 3.3).
				continue
			}
			if err := proto.Unmarshal(cmd.Payload, &req); err != nil {
				cs.respond(ctx, 0, core.Errorf(qimpb.Code_BAD_REQUEST, "request does not decode"), nil)
			} else {
				cs.handleRequest(ctx, &req)
			}
			cs.endRequest()
		case qimpb.CommandType_RESPONSE:
			cs.s.touchStream(cs)
			if err := proto.Unmarshal(cmd.Payload, &resp); err != nil {
				continue // an acknowledgement we cannot read: the message is sent again later
			}
			if p := cs.pusher.Load(); p != nil && resp.Code == int32(qimpb.Code_OK) {
				p.ack(resp.RequestId)
				cs.s.trim(cs)
			}
		default:
			cs.respond(ctx, 0, core.Errorf(qimpb.Code_PROTOCOL_VIOLATION, "%v belongs on the control stream", cmd.Command), nil)
		}
		if len(buf) > 64<<10 {
			buf = nil // do not keep a rare large buffer for the stream's life
		}
	}
}

// readFailed ends the read side. A frame that is too large or does not
// decode is answered, then the stream's read side is stopped; the
// connection and its other streams go on.
func (cs *convStream) readFailed(err error) {
	var code qimpb.Code
	switch {
	case errors.Is(err, qimpb.ErrFrameTooLarge):
		code = qimpb.Code_FRAME_TOO_LARGE
	case errors.Is(err, qimpb.ErrBadFrame), errors.Is(err, io.ErrUnexpectedEOF):
		code = qimpb.Code_BAD_REQUEST
	default:
		// EOF (the device finished its side), a reset, or the end of the
		// connection: finish our side too, after what is queued, so that
		// the stream is released (a device that opens and finishes
		// streams must not run out of them). A pusher using the stream
		// opens a new one when it has more to send: the device cannot
		// acknowledge on a stream it finished.
		cs.send(cs.s.ctx, outFrame{})
		return
	}
	cs.s.logger.Debug("stream refused", "code", code, "err", err)
	cs.str.CancelRead(code)
	c, reason := core.CodeOf(&core.Error{Code: code, Reason: err.Error()})
	cs.s.dev.metrics.Response(c)
	if frame, err := encodeResponse(0, c, reason, nil); err == nil {
		cs.send(cs.s.ctx, outFrame{frame: frame})
	}
	// Finish our side after what is queued.
	cs.send(cs.s.ctx, outFrame{})
}

// respond queues a response to a request. err == nil means OK with payload.
func (cs *convStream) respond(ctx context.Context, reqID uint64, err error, payload proto.Message) {
	code, reason := core.CodeOf(err)
	if code == qimpb.Code_INTERNAL || code == qimpb.Code_STORE_UNAVAILABLE {
		cs.s.logger.Error("request failed", "code", code, "err", err)
	}
	cs.s.dev.metrics.Response(code)
	frame, encErr := encodeResponse(reqID, code, reason, payload)
	if encErr != nil {
		cs.s.logger.Error("encode response", "err", encErr)
		return
	}
	// A device that does not read its responses stops its own requests
	// here, not the server's memory.
	for {
		c, ok, wait := cs.s.mem.takeOrWait(int64(len(frame)), nil, true)
		if ok {
			if cs.send(ctx, outFrame{frame: frame, cost: c}) != nil {
				cs.s.mem.give(c)
			}
			return
		}
		select {
		case <-wait:
		case <-cs.done:
			return
		case <-ctx.Done():
			return
		}
	}
}

// writeLoop writes queued frames, coalescing what is ready into one write,
// until the stream or the session ends. A zero outFrame finishes the
// stream's send side.
func (cs *convStream) writeLoop() {
	// Charges of the frames in wbuf, given back once it is written (or
	// the writer stops).
	var held []charge
	giveHeld := func() {
		for _, c := range held {
			cs.s.mem.give(c)
		}
		held = held[:0]
	}
	defer func() {
		cs.s.dropStream(cs)
		close(cs.done)
		giveHeld()
		cs.drainQueued()
		if p := cs.pusher.Load(); p != nil {
			p.streamLost(cs)
		}
	}()
	ctx := cs.s.ctx
	var wbuf []byte
	var ack qimpb.MessageAck
	for {
		var f outFrame
		select {
		case f = <-cs.out:
		case <-ctx.Done():
			return
		}
		for {
			if f.fin() {
				if len(wbuf) > 0 {
					if _, err := cs.str.Write(wbuf); err != nil {
						return
					}
				}
				cs.str.Close()
				return
			}
			if f.pend != nil {
				select {
				case <-f.pend.Done():
				default:
					// Not committed yet: write what is ready first.
					if len(wbuf) > 0 {
						if _, err := cs.str.Write(wbuf); err != nil {
							return
						}
						wbuf = wbuf[:0]
						giveHeld()
					}
					select {
					case <-f.pend.Done():
					case <-ctx.Done():
						return
					}
				}
				wbuf = cs.appendAppendResponse(wbuf, f.reqID, f.pend, &ack)
			} else if f.sent {
				wbuf = cs.appendSentResponse(wbuf, f.reqID, f.ts, &ack)
			} else {
				wbuf = append(wbuf, f.frame...)
			}
			if f.cost.n != 0 {
				held = append(held, f.cost)
			}
			if len(wbuf) >= 32<<10 {
				break
			}
			select {
			case f = <-cs.out:
				continue
			default:
			}
			break
		}
		if len(wbuf) > 0 {
			if _, err := cs.str.Write(wbuf); err != nil {
				return
			}
		}
		giveHeld()
		if cap(wbuf) > 256<<10 {
			wbuf = nil
		} else {
			wbuf = wbuf[:0]
		}
	}
}

// appendAppendResponse appends the response to a committed (or failed)
// message. ack is the writer's own, reused for every response.
func (cs *convStream) appendAppendResponse(b []byte, reqID uint64, p *core.Pending, ack *qimpb.MessageAck) []byte {
	var payload proto.Message
	res, perr := p.Result()
	if perr == nil {
		ack.Id, ack.Seq, ack.Timestamp, ack.Duplicate = res.Msg.Id, res.Msg.Seq, res.Msg.Timestamp, res.Duplicate
		payload = ack
	}
	code, reason := core.CodeOf(perr)
	cs.s.dev.metrics.Response(code)
	b, err := qimpb.AppendResponseFrame(b, code, reason, reqID, payload)
	if err != nil {
		cs.s.logger.Error("encode response", "err", err)
	}
	return b // as it was, on error
}

// appendSentResponse appends the response to an unstored message, accepted
// at ts. ack is the writer's own, reused for every response.
func (cs *convStream) appendSentResponse(b []byte, reqID uint64, ts int64, ack *qimpb.MessageAck) []byte {
	ack.Id, ack.Seq, ack.Timestamp, ack.Duplicate = 0, 0, ts, false
	cs.s.dev.metrics.Response(qimpb.Code_OK)
	b, err := qimpb.AppendResponseFrame(b, qimpb.Code_OK, "", reqID, ack)
	if err != nil {
		cs.s.logger.Error("encode response", "err", err)
	}
	return b // as it was, on error
}

func encodeResponse(reqID uint64, code qimpb.Code, reason string, payload proto.Message) ([]byte, error) {
	return qimpb.AppendResponseFrame(nil, code, reason, reqID, payload)
}

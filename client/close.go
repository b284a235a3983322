package client

import (
	"context"
	"time"

	"github.com/quic-go/quic-go"

	qimpb "github.com/qim-im/qim/proto"
)

// Close ends the session. It stops delivering messages, waits briefly for
// the acknowledgements of the messages already delivered to be written,
// sends DISCONNECT{CLOSED} on the control stream, waits briefly for the
// server to close the connection, closes it with code CLOSED, and waits
// until every goroutine of the session has returned and Messages is closed.
// Close is idempotent and returns nil.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		if c.finish(nil) {
			deadline := time.NewTimer(closeGrace)
			c.flushAcks(deadline.C)
			deadline.Reset(closeGrace)
			if c.sendDisconnect() == nil {
				select {
				case <-c.conn.Context().Done():
				case <-deadline.C:
				}
			}
			deadline.Stop()
		}
		c.conn.CloseWithError(quic.ApplicationErrorCode(qimpb.Code_CLOSED), "client closed")
	})
	<-c.done
	return nil
}

// Done returns a channel that is closed when the session has ended, for any
// reason, and all its goroutines have returned.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the session ended: nil before Done is closed and after
// Close; an *Error when the server disconnected the client (REPLACED,
// GOING_AWAY, ...); the transport error otherwise.
func (c *Client) Err() error {
	select {
	case <-c.done:
	default:
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reason
}

// run waits for the connection to end, records why, waits for every
// goroutine of the session, then closes Messages and Done. It runs in its
// own goroutine, started by Dial.
func (c *Client) run() {
	<-c.conn.Context().Done()
	c.finish(closeReason(context.Cause(c.conn.Context())))
	c.mu.Lock()
	c.stopped = true
	c.mu.Unlock()
	c.wg.Wait()
	close(c.msgs)
	c.mu.Lock()
	c.log.Debug("session ended", "reason", c.reason)
	c.mu.Unlock()
	close(c.done)
}

// finish records reason as the end of the session unless an earlier one is
// known. It reports whether reason was recorded.
func (c *Client) finish(reason error) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reasonSet {
		return false
	}
	c.reasonSet, c.reason = true, reason
	return true
}

// abort ends the session because of a local error, closing the connection
// with code.
func (c *Client) abort(code qimpb.Code, err error) {
	c.log.Warn("closing session", "code", code, "err", err)
	c.finish(err)
	c.conn.CloseWithError(quic.ApplicationErrorCode(code), err.Error())
}

// endErr is the error returned by operations on an ended session.
func (c *Client) endErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reason != nil {
		return c.reason
	}
	return ErrClosed
}

// flushAcks stops deliveries, waits for the readers that delivered a
// message to queue its acknowledgement, then for every stream's writer to
// write what it has queued and finish the stream, or until deadline fires.
func (c *Client) flushAcks(deadline <-chan time.Time) {
	c.mu.Lock()
	c.isClosing = true
	close(c.closing)
	quiet := make(chan struct{})
	if c.delivering == 0 {
		close(quiet)
	} else {
		c.quiet = quiet
	}
	streams := make([]*stream, 0, len(c.live))
	for s := range c.live {
		streams = append(streams, s)
	}
	c.mu.Unlock()

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
func (c *Client) beginDelivery() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.isClosing {
		return false
	}
	c.delivering++
	return true
}

// endDelivery ends what beginDelivery began.
func (c *Client) endDelivery() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.delivering--
	if c.delivering == 0 && c.quiet != nil {
		close(c.quiet)
		c.quiet = nil
	}
}

// sendDisconnect writes DISCONNECT{CLOSED} on the control stream.
func (c *Client) sendDisconnect() error {
	frame, err := qimpb.EncodeFrame(qimpb.CommandType_DISCONNECT,
		&qimpb.Disconnect{Code: int32(qimpb.Code_CLOSED), Reason: "client closed"})
	if err != nil {
		return err
	}
	c.ctl.SetWriteDeadline(time.Now().Add(closeGrace))
	_, err = c.ctl.Write(frame)
	return err
}

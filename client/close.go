package client

import (
	"time"

	"github.com/quic-go/quic-go"

	qimpb "github.com/qim-im/qim/proto"
)

// Close ends the session. When connected, it stops delivering messages,
// waits briefly for the acknowledgements of the messages already delivered
// to be written, sends DISCONNECT{CLOSED} on the control stream, waits
// briefly for the server to close the connection and closes it with code
// CLOSED; it stops any reconnection in progress. It then waits until every
// goroutine of the session has returned and Messages is closed. Close is
// idempotent and returns nil.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closeCalled = true
		l, cancel := c.cur, c.cancelDial
		c.notifyLocked()
		c.mu.Unlock()
		close(c.stop)
		if cancel != nil {
			cancel()
		}
		if l != nil {
			l.close()
		}
	})
	<-c.done
	c.httpOnce.Do(func() {}) // after Do, c.http is set or never will be
	if c.http != nil {
		c.http.CloseIdleConnections()
	}
	return nil
}

// Done returns a channel that is closed when the session has ended, for any
// reason, and all its goroutines have returned.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the session ended: nil before Done is closed and after
// Close; an *Error when the server disconnected the client (REPLACED,
// GOING_AWAY, ...) or refused a reconnection; the transport error
// otherwise.
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

// endErr is the error returned by operations on an ended or closing
// session.
func (c *Client) endErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.endErrLocked()
}

func (c *Client) endErrLocked() error {
	if c.ended && c.reason != nil {
		return c.reason
	}
	return ErrClosed
}

// close ends the link for Close: unless the link has already ended, it
// flushes acknowledgements, sends DISCONNECT and gives the server a moment
// to close the connection, then closes it.
func (l *link) close() {
	if l.finish(errClosing) && l.isEstablished() {
		deadline := time.NewTimer(closeGrace)
		l.drainAcks(deadline.C)
		deadline.Reset(closeGrace)
		if l.sendDisconnect() == nil {
			select {
			case <-l.conn.Context().Done():
			case <-deadline.C:
			}
		}
		deadline.Stop()
	}
	l.conn.CloseWithError(quic.ApplicationErrorCode(qimpb.Code_CLOSED), "client closed")
}

package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	qimpb "github.com/qim-im/qim/proto"
)

// connectTimeout bounds one reconnection attempt: the QUIC handshake and
// the answer to CONNECT.
const connectTimeout = 15 * time.Second

// State is the state of a Client's connection, reported to Config.OnState.
type State int

const (
	// Connected: the server accepted CONNECT on a new connection.
	Connected State = iota + 1
	// Disconnected: the connection ended. The client reconnects unless it
	// is closed, in the background, or the session ended.
	Disconnected
	// Reconnecting: an attempt to reconnect begins.
	Reconnecting
)

// String returns the state's name.
func (s State) String() string {
	switch s {
	case Connected:
		return "connected"
	case Disconnected:
		return "disconnected"
	case Reconnecting:
		return "reconnecting"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Reconnects returns how many times the client has connected again since
// Dial.
func (c *Client) Reconnects() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reconnects
}

// Used0RTT reports whether the last connection sent CONNECT in 0-RTT and
// the server accepted it.
func (c *Client) Used0RTT() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used0RTT
}

// Background tells the client that the app went to the background. To save
// the battery it closes the connection quietly (without DISCONNECT: the
// server keeps the device's cursors anyway) with code CLOSED and reason
// "background", after giving the acknowledgements of delivered messages a
// moment to be sent, and does not reconnect until Foreground. Messages
// stays open; requests made meanwhile wait for Foreground (or their ctx).
// Background returns once the connection is closed; it does nothing if the
// client is already in the background or has ended. It does not say
// PRESENCE AWAY first: the user's contacts see it offline after the
// server's grace period (see SetPresence).
func (c *Client) Background() {
	c.mu.Lock()
	if c.closeCalled || c.ended || c.background {
		c.mu.Unlock()
		return
	}
	c.background, c.wantDial = true, false
	l, cancel := c.cur, c.cancelDial
	c.notifyLocked()
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	c.poke()
	if l != nil {
		l.quietClose(errBackground, "background")
	}
}

// Foreground tells the client that the app is in the foreground again: it
// reconnects now, in 0-RTT when it can, and the server pushes everything
// the device missed. It returns once the client is connected, or with
// ctx's error. Without Config.Reconnect it makes one attempt and returns
// its error, after which the client waits for the next Foreground; with
// it, failed attempts are retried with backoff until ctx ends. Foreground
// on a connected client returns nil at once.
func (c *Client) Foreground(ctx context.Context) error {
	c.mu.Lock()
	if c.closeCalled || c.ended {
		defer c.mu.Unlock()
		return c.endErrLocked()
	}
	c.background = false
	if l := c.cur; l != nil && l.established && l.usableLocked() {
		c.mu.Unlock()
		return nil
	}
	c.wantDial = true
	fails := c.dialErrs
	c.mu.Unlock()
	c.poke()
	for {
		c.mu.Lock()
		l, ch := c.cur, c.changed
		switch {
		case l != nil && l.established && l.usableLocked():
			c.mu.Unlock()
			return nil
		case c.closeCalled || c.ended:
			defer c.mu.Unlock()
			return c.endErrLocked()
		case c.dialErrs != fails && (!c.cfg.Reconnect || c.background):
			defer c.mu.Unlock()
			return c.dialErr
		}
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// supervise owns the client's connections: it waits for the current one to
// end, shuts it down, and reconnects or ends the session. It runs in its
// own goroutine, started by Dial, and closes Messages and Done when the
// session ends.
func (c *Client) supervise(l *link) {
	c.emit(Connected)
	for l != nil {
		<-l.conn.Context().Done()
		l.shutdown()
		reason, aborted := l.endReason()
		c.uninstall(l)
		c.log.Debug("connection ended", "reason", reason)
		c.emit(Disconnected)
		l = c.resume(reason, aborted)
		if l != nil {
			c.restorePresence(l)
		}
	}
	close(c.msgs)
	close(c.events)
	c.mu.Lock()
	c.ended = true
	c.notifyLocked()
	c.log.Debug("session ended", "reason", c.reason)
	c.mu.Unlock()
	close(c.done)
}

// resume decides what follows the end of a connection: reconnecting (with
// backoff, or at once for Foreground), waiting for Foreground, or the end
// of the session, whose reason it records. It returns the new connection,
// or nil when the session ends. It is called by supervise.
func (c *Client) resume(reason error, aborted bool) *link {
	if isGoingAway(reason) {
		c.nextNode() // the node is shutting down: do not come back to it
	}
	for failures, refreshes := 0, 0; ; {
		c.mu.Lock()
		closing, bg, want := c.closeCalled, c.background, c.wantDial
		switch {
		case !aborted && !closing && c.cfg.Reconnect && c.cfg.TokenFunc != nil && isTokenRefusal(reason) && refreshes < maxTokenRefreshes:
			c.mu.Unlock()
			refreshes++
			if err := c.refreshToken(); err != nil {
				c.log.Debug("token refresh failed", "err", err)
				c.mu.Lock()
				c.reason = reason
				c.mu.Unlock()
				return nil
			}
			reason = nil // reconnect, after the backoff
			continue
		case aborted || isTerminal(reason):
			c.reason = reason
			c.mu.Unlock()
			return nil
		case closing:
			c.reason = nil
			c.mu.Unlock()
			return nil
		case bg:
			c.mu.Unlock()
			select {
			case <-c.kick:
			case <-c.stop:
			}
			continue
		case !c.cfg.Reconnect && !want:
			c.reason = reason
			c.mu.Unlock()
			return nil
		}
		c.wantDial = false
		c.mu.Unlock()

		if !want && !c.sleep(c.backoff(failures)) {
			continue // Close, Background or Foreground: decide again
		}
		c.emit(Reconnecting)
		l, err := c.redial()
		if l != nil {
			return l
		}
		if err == nil {
			continue // cancelled by Close or Background
		}
		failures++
		reason = err
		c.log.Debug("reconnection failed", "attempt", failures, "err", err)
		if !isTokenRefusal(err) {
			c.nextNode() // the node may be gone: try the next one
		}
		c.mu.Lock()
		c.dialErrs++
		c.dialErr = err
		if !c.cfg.Reconnect && !isTerminal(err) {
			c.background = true // wait for the next Foreground
		}
		c.notifyLocked()
		c.mu.Unlock()
	}
}

// redial makes one reconnection attempt, to the node chosen by nextNode.
// It returns the new link, now the current one, or the attempt's error, or
// neither when Close or Background cancelled it.
func (c *Client) redial() (*link, error) {
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	c.mu.Lock()
	if c.closeCalled || c.background {
		c.mu.Unlock()
		return nil, nil
	}
	c.cancelDial = cancel
	node := c.node
	c.mu.Unlock()

	l, err := c.dialLink(ctx, node, true)

	c.mu.Lock()
	c.cancelDial = nil
	closing, bg := c.closeCalled, c.background
	if err == nil && !closing && !bg {
		c.reconnects++
		c.wantDial = false
		prev := c.served
		c.setLinkLocked(l)
		c.mu.Unlock()
		l.log.Debug("reconnected", "0rtt", l.conn.ConnectionState().Used0RTT)
		if l.node != prev {
			c.failedOver(c.addrs[prev], c.addrs[l.node])
		}
		c.emit(Connected)
		return l, nil
	}
	c.mu.Unlock()
	switch {
	case err == nil && closing:
		l.close()
		l.shutdown()
		c.uninstall(l)
	case err == nil:
		l.quietClose(errBackground, "background")
		l.shutdown()
		c.uninstall(l)
	case closing || bg:
	default:
		return nil, err
	}
	return nil, nil
}

// backoff returns how long to wait before reconnection attempt n+1 after n
// failures: exponential, with full jitter.
func (c *Client) backoff(failures int) time.Duration {
	ceil := c.cfg.ReconnectMax
	if failures < 32 {
		ceil = min(ceil, c.cfg.ReconnectMin<<failures)
	}
	if ceil <= 0 {
		return 0
	}
	return rand.N(ceil)
}

// sleep waits for d and reports whether it did, rather than being woken by
// Close, Background or Foreground.
func (c *Client) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.kick:
		return false
	case <-c.stop:
		return false
	}
}

// poke wakes supervise if it is waiting.
func (c *Client) poke() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// emit reports a state change to Config.OnState. Only supervise calls it.
func (c *Client) emit(s State) {
	if c.cfg.OnState != nil {
		c.cfg.OnState(s)
	}
}

// linkFor returns the current connection once requests may use it,
// waiting while the client reconnects or is in the background. With
// handshake, it also waits for the handshake to complete, so that the
// request does not go in 0-RTT.
func (c *Client) linkFor(ctx context.Context, handshake bool) (*link, error) {
	for {
		c.mu.Lock()
		if c.closeCalled || c.ended {
			defer c.mu.Unlock()
			return nil, c.endErrLocked()
		}
		l, ch := c.cur, c.changed
		usable := l != nil && l.usableLocked()
		c.mu.Unlock()
		if usable {
			if !handshake {
				return l, nil
			}
			select {
			case <-l.conn.HandshakeComplete():
				return l, nil
			case <-l.conn.Context().Done():
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// usableLocked reports whether requests may be sent on l: it has not
// ended. c.mu must be held.
func (l *link) usableLocked() bool {
	return !l.reasonSet && l.conn.Context().Err() == nil
}

// afterLoss decides what becomes of a request whose connection ended: nil
// to send it again on the next connection, or the error to return.
func (c *Client) afterLoss(lost *lostError, retry bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	reason := lost.reason
	switch {
	case c.closeCalled || errors.Is(reason, errClosing):
		return c.endErrLocked()
	case isTerminal(reason):
		return reason
	case c.background || errors.Is(reason, errBackground), c.cfg.Reconnect:
		if retry {
			return nil
		}
		return fmt.Errorf("%w: %w", ErrStreamEnded, reason)
	}
	return reason
}

// install makes l, whose CONNECT is written but not yet answered, the
// current connection, so that waiting requests go out with CONNECT.
func (c *Client) install(l *link) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closeCalled && !c.background {
		c.cur = l
		c.notifyLocked()
	}
}

// uninstall makes l no longer the current connection.
func (c *Client) uninstall(l *link) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == l {
		c.cur = nil
		c.notifyLocked()
	}
}

// setLinkLocked makes l, which the server accepted, the current
// connection. c.mu must be held.
func (c *Client) setLinkLocked(l *link) {
	c.cur = l
	c.node, c.served = l.node, l.node
	c.connected = l.connected
	limit := int64(l.connected.GetMaxFrame())
	if limit <= 0 {
		limit = qimpb.DefaultMaxFrame
	}
	c.sendLimit.Store(limit)
	c.used0RTT = l.conn.ConnectionState().Used0RTT
	c.notifyLocked()
}

// notifyLocked wakes everything waiting for a change of the connection.
// c.mu must be held.
func (c *Client) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// maxTokenRefreshes is how many fresh tokens in a row Config.TokenFunc may
// give that the server refuses before the session ends.
const maxTokenRefreshes = 3

// isTokenRefusal reports whether the server ended a session or refused a
// CONNECT because of its token, which Config.TokenFunc may replace.
func isTokenRefusal(err error) bool {
	var qe *Error
	return errors.As(err, &qe) && (qe.Code == qimpb.Code_TOKEN_EXPIRED || qe.Code == qimpb.Code_UNAUTHENTICATED)
}

// refreshToken gets a fresh token from Config.TokenFunc for the next
// CONNECT.
func (c *Client) refreshToken() error {
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	go func() {
		select {
		case <-c.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	token, err := c.cfg.TokenFunc(ctx)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.connectMsg.Token = token
	c.mu.Unlock()
	return nil
}

// isTerminal reports whether a connection that ended with err must not be
// replaced by a new one: the server would refuse it again or the session
// moved elsewhere.
func isTerminal(err error) bool {
	var qe *Error
	if !errors.As(err, &qe) {
		return false
	}
	switch qe.Code {
	case qimpb.Code_REPLACED, qimpb.Code_UNAUTHENTICATED, qimpb.Code_TOKEN_EXPIRED,
		qimpb.Code_PROTOCOL_VIOLATION, qimpb.Code_UNSUPPORTED_VERSION, qimpb.Code_INVALID_ARGUMENT,
		qimpb.Code_BAD_REQUEST, qimpb.Code_FRAME_TOO_LARGE, qimpb.Code_FORBIDDEN:
		return true
	}
	return false
}

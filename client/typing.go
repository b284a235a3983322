package client

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"

	qimpb "github.com/qim-im/qim/proto"
)

// typingQueue is how many typing datagrams may wait for sendTyping; Typing
// drops one that finds the queue full.
const typingQueue = 8

// Typing tells the other user of to (or the group's other members) that the
// user is typing there (active) or stopped (PROTOCOL.md 11.5). A program
// sends active again every 3 s while the user types, and active false when
// the user stops or sends; the server forwards nothing beyond a burst of 4,
// then 2 per second, per conversation.
//
// When the server granted FEATURE_DATAGRAMS, Typing goes in a QUIC
// datagram, never answered: it returns nil at once, without waiting, and
// a datagram that finds the client's small queue full (the connection is
// congested) is dropped, like one lost on the way. Otherwise it is a
// TYPING request on the stream of the client's other requests (not the
// conversation's, so that it never waits behind messages the program has
// not read yet) and Typing returns the server's answer; it is sent once the
// handshake is complete and not again after a lost connection (a stale
// "typing" is worth nothing).
func (c *Client) Typing(ctx context.Context, to Peer, active bool) error {
	if err := to.validate(); err != nil {
		return err
	}
	payload, err := proto.Marshal(&qimpb.Typing{ToUser: to.User, ToGroup: to.Group, Active: active})
	if err != nil {
		return fmt.Errorf("qim: encode Typing: %w", err)
	}
	req := &qimpb.Request{Type: qimpb.RequestType_TYPING, Payload: payload}
	c.mu.Lock()
	var q chan []byte
	if l := c.cur; l != nil && l.established && l.usableLocked() {
		q = l.typing
	}
	c.mu.Unlock()
	if q == nil {
		_, err := c.do(ctx, Peer{}, req, false)
		return err
	}
	b, err := typingDatagram(req)
	if err != nil {
		return err
	}
	select {
	case q <- b:
	default:
		c.log.Debug("typing datagram dropped: queue full", "to", to)
	}
	return nil
}

// typingDatagram encodes req as a datagram: one Command, without the
// length prefix of a frame (PROTOCOL.md 11.5).
func typingDatagram(req *qimpb.Request) ([]byte, error) {
	payload, err := proto.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("qim: encode Request: %w", err)
	}
	b, err := proto.Marshal(&qimpb.Command{Version: qimpb.Version, Command: qimpb.CommandType_REQUEST, Payload: payload})
	if err != nil {
		return nil, fmt.Errorf("qim: encode Command: %w", err)
	}
	return b, nil
}

// sendTyping sends the typing datagrams Typing queues until the connection
// ends. SendDatagram blocks while quic-go's own queue is full, which holds
// up only this goroutine: Typing drops what finds l.typing full meanwhile.
// It runs in its own goroutine, when the server granted FEATURE_DATAGRAMS.
func (l *link) sendTyping() {
	defer l.wg.Done()
	done := l.conn.Context().Done()
	for {
		select {
		case b := <-l.typing:
			if err := l.conn.SendDatagram(b); err != nil {
				l.log.Debug("typing datagram not sent", "err", err)
			}
		case <-done:
			return
		}
	}
}

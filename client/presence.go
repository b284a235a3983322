package client

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"

	qimpb "github.com/qim-im/qim/proto"
)

// SetPresence tells the server whether the app is in the background (away)
// or in the foreground, and returns the user's presence as its contacts
// see it, across all its devices (PROTOCOL.md 11.6): ONLINE while one
// device is connected and in the foreground, AWAY while all are in the
// background. A new connection counts as in the foreground, so the client
// says away again on each reconnection until SetPresence(ctx, false).
//
// Background does not call it: it closes the connection, and the user's
// contacts see it offline once the server's grace period (5 s) has passed
// without another connection of the user.
func (c *Client) SetPresence(ctx context.Context, away bool) (*qimpb.Presence, error) {
	select {
	case c.presenceTurn <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-c.presenceTurn }()
	c.mu.Lock()
	c.away = away
	c.mu.Unlock()
	res := new(qimpb.Presence)
	if err := c.call(ctx, qimpb.RequestType_PRESENCE, presenceRequest(away), res, true); err != nil {
		return nil, err
	}
	return res, nil
}

// ContactsPresence returns the user's contacts, sorted, and the presence
// of those who show it to the user (those who added the user to their own
// contacts), by user. Contacts returns the same list without presence.
func (c *Client) ContactsPresence(ctx context.Context) ([]string, map[string]*qimpb.Presence, error) {
	res, err := c.contact(ctx, qimpb.ContactOp_CONTACT_LIST, "")
	if err != nil {
		return nil, nil, err
	}
	shown := make(map[string]*qimpb.Presence, len(res.GetPresence()))
	for _, p := range res.GetPresence() {
		shown[p.GetUser()] = p
		c.marks.presence(p)
	}
	return res.GetUsers(), shown, nil
}

func presenceRequest(away bool) *qimpb.PresenceRequest {
	if away {
		return &qimpb.PresenceRequest{State: qimpb.PresenceState_AWAY}
	}
	return &qimpb.PresenceRequest{State: qimpb.PresenceState_ONLINE}
}

// restorePresence says away on l, a new connection, if the program last
// called SetPresence with away. It is called by supervise.
func (c *Client) restorePresence(l *link) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.away || l.stopped {
		return
	}
	l.wg.Add(1)
	go l.sayAway()
}

// sayAway sends PRESENCE AWAY on the general stream of l, unless a
// SetPresence changed the state meanwhile, and gives up when the
// connection ends. It runs in its own goroutine.
func (l *link) sayAway() {
	defer l.wg.Done()
	c := l.c
	ctx := l.conn.Context()
	select {
	case c.presenceTurn <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-c.presenceTurn }()
	c.mu.Lock()
	away := c.away
	c.mu.Unlock()
	if !away {
		return
	}
	err := func() error {
		payload, err := proto.Marshal(presenceRequest(true))
		if err != nil {
			return fmt.Errorf("qim: encode PresenceRequest: %w", err)
		}
		s, err := l.streamFor(ctx, Peer{})
		if err != nil {
			return err
		}
		_, err = s.request(ctx, &qimpb.Request{Type: qimpb.RequestType_PRESENCE, Payload: payload})
		return err
	}()
	if err != nil {
		l.log.Debug("presence away not restored", "err", err)
	}
}

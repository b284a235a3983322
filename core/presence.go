package core

import (
	"context"

	qimpb "github.com/qim-im/qim/proto"
)

// PresenceConn is one connection of a user as presence counts it
// (docs/PROTOCOL.md section 11.6).
type PresenceConn interface {
	// SetAway marks the connection in the background (true) or not.
	SetAway(away bool)
	// Leave ends the connection's part in its user's presence. It may be
	// called more than once.
	Leave()
}

// NoPresence is a PresenceConn that counts for nothing (a send-only
// connection).
var NoPresence PresenceConn = noPresence{}

type noPresence struct{}

func (noPresence) SetAway(bool) {}
func (noPresence) Leave()       {}

// JoinPresence counts a new connection of user's device in the user's
// presence, ONLINE.
func (h *Hub) JoinPresence(app, user, device string) PresenceConn {
	return NoPresence
}

// PresenceSnapshot returns the presence of those of user's contacts who
// show it to user.
func (h *Hub) PresenceSnapshot(ctx context.Context, app, user string) ([]*qimpb.Presence, error) {
	return nil, nil
}

// Presence returns user's presence as its contacts see it.
func (h *Hub) Presence(app, user string) *qimpb.Presence {
	return &qimpb.Presence{User: user}
}

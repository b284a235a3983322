package core

import (
	"context"
	"time"

	qimpb "github.com/qim-im/qim/proto"
)

// route delivers a message to the users of its conversation: both users of
// a 1:1 conversation (the sender's other devices included) or every member
// of a group, with its push frame, encoded once for all of them. (The
// committer has put stored group messages in the recent cache.) read is
// when the message was read off its sender's stream (metrics.Now); cost is
// MsgCost(m), or 0 to have it computed.
func (h *Hub) route(ctx context.Context, app, conv string, m *qimpb.Message, read time.Time, cost int64) {
	var users []string
	if m.ToGroup != "" {
		g, err := h.group(ctx, app, m.ToGroup)
		if err != nil {
			// The message is stored; members catch up on their next connect.
			h.logger.Warn("route: group members unavailable", "group", m.ToGroup, "err", err)
			return
		}
		users = g.members
	} else {
		users = []string{m.ToUser}
		if m.FromUser != m.ToUser {
			users = append(users, m.FromUser)
		}
	}
	f := h.newPushFrame(m, cost)
	h.router.Deliver(app, users, Event{Msg: m, Read: read, Frame: f, Conv: conv})
	f.Release()
}

// Relay delivers m, a message of conversation conv of app validated by
// CheckMessage, to the devices of its conversation's users that are online
// now, without storing it (offline=false): it gets no id and no seq, and a
// device that is not connected never sees it. It stamps m with the current
// time and returns it. m must have FromUser and FromDevice set.
func (h *Hub) Relay(ctx context.Context, app, conv string, m *qimpb.Message, read time.Time) int64 {
	m.Id, m.Seq = 0, 0
	m.Timestamp = h.now().UnixMilli()
	h.metrics.MessageIn(false)
	h.route(ctx, app, conv, m, read, 0)
	return m.Timestamp
}

// Messages returns up to limit stored messages of a conversation with seq
// after after, oldest first, from the recent cache when it holds them,
// else from the store. Pushers read the messages a device has not
// acknowledged with it.
func (h *Hub) Messages(ctx context.Context, app, conv string, after uint64, limit int) ([]*qimpb.Message, error) {
	if ms, ok := h.recent.after(app, conv, after, limit); ok {
		return ms, nil
	}
	ms, err := h.store.Messages(ctx, app, conv, after, limit)
	if err != nil {
		return nil, StoreError("read messages", err)
	}
	return ms, nil
}

package core

import (
	"context"
	"time"

	qimpb "github.com/qim-im/qim/proto"
)

// TypingTTL is how long a device shows a Typing event that is not renewed
// (Typing.ttl_ms).
const TypingTTL = 6 * time.Second

// maxTypingGroup is the largest group whose typing is forwarded: in a
// larger one, "someone is typing" says nothing and costs a fan-out to
// every member.
const maxTypingGroup = 1000

// Typing forwards that user (on device) is typing, or stopped, in the
// conversation t addresses, to the other user's devices or the other
// members' (docs/PROTOCOL.md section 11.5). It stores nothing and never
// waits on a device. TYPING is limited per user and conversation
// (Config.TypingRate): beyond the limit it returns RATE_LIMITED and
// forwards nothing.
func (h *Hub) Typing(ctx context.Context, app, user, device string, t *qimpb.Typing) error {
	conv, err := h.Conversation(ctx, app, user, t.ToUser, t.ToGroup)
	if err != nil {
		return err
	}
	if !h.typing.allow(app, user+"\x00"+conv) {
		return Errorf(qimpb.Code_RATE_LIMITED, "too many typing notifications; slow down")
	}
	note := &qimpb.Typing{FromUser: user, Active: t.Active, TtlMs: uint32(TypingTTL / time.Millisecond)}
	var users []string
	if t.ToGroup != "" {
		g, err := h.group(ctx, app, t.ToGroup)
		if err != nil {
			return err
		}
		if len(g.members) > maxTypingGroup {
			return nil
		}
		users = make([]string, 0, len(g.members)-1)
		for _, u := range g.members {
			if u != user {
				users = append(users, u)
			}
		}
		note.ToGroup = t.ToGroup
	} else {
		if t.ToUser == user {
			return nil
		}
		users = []string{t.ToUser}
		note.ToUser = user // the receiver's conversation is with the typist
	}
	h.router.Deliver(app, users, Event{Note: &qimpb.Event{Typing: note}, NoteDevice: device})
	return nil
}

package core

import (
	"context"
	"strings"

	"github.com/qim-im/qim/auth"
	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// SystemUser is the sender of the messages an application's backend sends
// in its own name (the HTTP API's "system" messages). It may write to any
// group of its application without being a member. No device may connect
// as it: Authenticate refuses it, and the HTTP API mints no token for it.
const SystemUser = "@system"

// ParseConv splits a conversation key ("u:<a>:<b>" with a < b, or
// "g:<group id>") into the users of a 1:1 conversation or the id of a
// group. ok is false for anything else, including a 1:1 key whose users are
// not in order or not valid ids.
func ParseConv(conv string) (a, b, group string, ok bool) {
	switch {
	case strings.HasPrefix(conv, "g:"):
		group = conv[2:]
		return "", "", group, validGroupID(group)
	case strings.HasPrefix(conv, "u:"):
		a, b, found := strings.Cut(conv[2:], ":")
		if !found || !auth.ValidID(a) || !auth.ValidID(b) || b < a {
			return "", "", "", false
		}
		return a, b, "", true
	}
	return "", "", "", false
}

// Conversation returns the conversation user of app writes to when it
// addresses toUser or toGroup (exactly one of them), after the same checks
// as CheckMessage: a valid user id, or a group that exists and has user as
// a member (SystemUser writes to any group).
func (h *Hub) Conversation(ctx context.Context, app, user, toUser, toGroup string) (string, error) {
	if (toUser == "") == (toGroup == "") {
		return "", Errorf(qimpb.Code_INVALID_ARGUMENT, "set exactly one of to_user and to_group")
	}
	if toUser != "" {
		if !auth.ValidID(toUser) {
			return "", Errorf(qimpb.Code_INVALID_ARGUMENT, "to_user is not a valid user id")
		}
		return store.DirectConv(user, toUser), nil
	}
	if !validGroupID(toGroup) {
		return "", Errorf(qimpb.Code_NOT_FOUND, "no such group")
	}
	g, err := h.group(ctx, app, toGroup)
	if err != nil {
		return "", err
	}
	if user != SystemUser && !g.isMember(user) {
		return "", errNotMember
	}
	return store.GroupConv(toGroup), nil
}

// CanRead reports whether user of app may read conversation conv: one of
// the two users of a 1:1 conversation, or a current member of a group (a
// user who left or was kicked reads nothing more of it, as GROUP_HISTORY).
// An empty user is the application itself, which reads every conversation
// that exists. Refusals are *Error: INVALID_ARGUMENT for a malformed key,
// FORBIDDEN, or NOT_FOUND for a group that does not exist.
func (h *Hub) CanRead(ctx context.Context, app, user, conv string) error {
	a, b, group, ok := ParseConv(conv)
	if !ok {
		return Errorf(qimpb.Code_INVALID_ARGUMENT, "conversation must be u:<user>:<user> (in order) or g:<group id>")
	}
	if group == "" {
		if user != "" && user != a && user != b {
			return Errorf(qimpb.Code_FORBIDDEN, "not a user of the conversation")
		}
		return nil
	}
	g, err := h.group(ctx, app, group)
	if err != nil {
		return err
	}
	if user != "" && !g.isMember(user) {
		return errNotMember
	}
	return nil
}

// History returns a page of conversation conv for user of app (an empty
// user is the application itself), after CanRead: up to limit messages
// (default 50, at most 500) with seq < before (0: the latest), oldest
// first.
func (h *Hub) History(ctx context.Context, app, user, conv string, before uint64, limit int) ([]*qimpb.Message, error) {
	if err := h.CanRead(ctx, app, user, conv); err != nil {
		return nil, err
	}
	return h.history(ctx, app, conv, before, limit)
}

// history reads a page of a conversation, from the recent cache when it
// holds it.
func (h *Hub) history(ctx context.Context, app, conv string, before uint64, limit int) ([]*qimpb.Message, error) {
	if limit <= 0 {
		limit = defaultHistory
	}
	limit = min(limit, maxHistory)
	if ms, ok := h.recent.history(app, conv, before, limit); ok {
		return ms, nil
	}
	ms, err := h.store.History(ctx, app, conv, before, limit)
	if err != nil {
		return nil, StoreError("history", err)
	}
	return ms, nil
}

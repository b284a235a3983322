package core

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"slices"
	"strings"
	"unicode/utf8"

	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/auth"
	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// newGroupID returns a random group id: "g" and 16 base32 characters.
func newGroupID() string {
	var b [10]byte
	rand.Read(b[:])
	return "g" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// validGroupID reports whether id has the shape of a group id (any id is
// looked up only within the caller's application).
func validGroupID(id string) bool { return auth.ValidID(id) }

var errNotMember = Errorf(qimpb.Code_FORBIDDEN, "not a member of the group")

// Group runs a group request of user in app: create, list, join, invite,
// leave, kick, members or history. Every rule about membership, bans, the
// size limit and the owner is decided by the store, atomically with its
// write (store.Store); the hub adds the invitation limit and keeps its
// group cache consistent, and stops pushes to a user who left or was
// kicked at once (Event.Revoke). Every refusal is an *Error; store
// failures map to STORE_UNAVAILABLE (CodeOf).
func (h *Hub) Group(ctx context.Context, app, user string, r *qimpb.GroupRequest) (*qimpb.GroupResult, error) {
	st := h.store
	if _, ok := qimpb.GroupOp_name[int32(r.Op)]; !ok || r.Op == qimpb.GroupOp_GROUP_OP_UNSPECIFIED {
		return nil, Errorf(qimpb.Code_INVALID_ARGUMENT, "unknown group op %d", r.Op)
	}
	if r.Op == qimpb.GroupOp_GROUP_CREATE {
		if r.Name == "" || len(r.Name) > maxGroupName || !utf8.ValidString(r.Name) {
			return nil, Errorf(qimpb.Code_INVALID_ARGUMENT, "group name must be 1 to %d bytes of UTF-8", maxGroupName)
		}
		g := store.Group{ID: newGroupID(), Name: r.Name, Owner: user, Created: h.now().UnixMilli()}
		if err := st.CreateGroup(ctx, app, g); err != nil {
			return nil, StoreError("create group", err)
		}
		return &qimpb.GroupResult{Group: groupInfo(g)}, nil
	}
	if r.Op == qimpb.GroupOp_GROUP_LIST {
		gs, err := st.UserGroups(ctx, app, user)
		if err != nil {
			return nil, StoreError("list groups", err)
		}
		res := &qimpb.GroupResult{}
		for _, g := range gs {
			res.Groups = append(res.Groups, groupInfo(g))
		}
		return res, nil
	}
	if !validGroupID(r.GroupId) {
		return nil, Errorf(qimpb.Code_NOT_FOUND, "no such group")
	}
	g, err := h.group(ctx, app, r.GroupId)
	if err != nil {
		return nil, err
	}
	member := g.isMember(user)
	switch r.Op {
	case qimpb.GroupOp_GROUP_JOIN:
		if err := h.joinGroup(ctx, app, r.GroupId, user); err != nil {
			return nil, err
		}
	case qimpb.GroupOp_GROUP_INVITE:
		if !member {
			return nil, errNotMember
		}
		if !auth.ValidID(r.User) {
			return nil, Errorf(qimpb.Code_INVALID_ARGUMENT, "user is not a valid user id")
		}
		if err := h.inviteMember(ctx, app, g, user, r.User); err != nil {
			return nil, err
		}
	case qimpb.GroupOp_GROUP_LEAVE:
		if err := h.leaveGroup(ctx, app, r.GroupId, user); err != nil {
			return nil, err
		}
	case qimpb.GroupOp_GROUP_KICK:
		if !auth.ValidID(r.User) {
			return nil, Errorf(qimpb.Code_INVALID_ARGUMENT, "user is not a valid user id")
		}
		if r.User == user {
			return nil, Errorf(qimpb.Code_INVALID_ARGUMENT, "leave with GROUP_LEAVE")
		}
		if err := h.kickMember(ctx, app, r.GroupId, user, r.User); err != nil {
			return nil, err
		}
	case qimpb.GroupOp_GROUP_MEMBERS:
		if !member {
			return nil, errNotMember
		}
		info, err := st.GetGroup(ctx, app, r.GroupId)
		if err != nil {
			return nil, StoreError("get group", err)
		}
		return &qimpb.GroupResult{Group: groupInfo(info), Members: g.members}, nil
	case qimpb.GroupOp_GROUP_RECEIPTS:
		if !member {
			return nil, errNotMember
		}
		return h.groupReceipts(ctx, app, g, r)
	case qimpb.GroupOp_GROUP_HISTORY:
		if !member {
			return nil, errNotMember
		}
		ms, err := h.history(ctx, app, store.GroupConv(r.GroupId), r.BeforeSeq, int(r.Limit))
		if err != nil {
			return nil, err
		}
		// A page never makes a frame larger than the limit: drop its
		// oldest messages until it fits (the client pages on from the
		// oldest it got).
		res := &qimpb.GroupResult{Messages: ms}
		for len(res.Messages) > 1 && proto.Size(res)+frameOverhead > h.maxFrame {
			res.Messages = res.Messages[1:]
		}
		return res, nil
	default:
		return nil, Errorf(qimpb.Code_INVALID_ARGUMENT, "unknown group op %d", r.Op)
	}
	info, err := st.GetGroup(ctx, app, r.GroupId)
	if errors.Is(err, store.ErrNotFound) {
		// The request was done, and the group closed since: its last
		// member left (this one, for a LEAVE).
		return &qimpb.GroupResult{Group: groupInfo(g.info)}, nil
	}
	if err != nil {
		return nil, StoreError("get group", err)
	}
	return &qimpb.GroupResult{Group: groupInfo(info)}, nil
}

// joinGroup makes user a member of a group, unless they are banned or it
// is full, and drops the cached snapshot if they joined. The store decides
// both rules atomically with the write.
func (h *Hub) joinGroup(ctx context.Context, app, id, user string) error {
	added, err := h.store.JoinGroup(ctx, app, id, user, h.maxGroup)
	if added {
		h.changedGroup(app, id)
	}
	return h.groupErr("join group", err, "removed from the group by its owner")
}

// inviteMember adds user to group g on behalf of by. An invitation that
// would add user from someone not in user's contacts takes one of user's
// invitations (inviteLimits) first, and gives it back if user was not
// added after all. The store decides membership, bans and the size limit.
func (h *Hub) inviteMember(ctx context.Context, app string, g *groupState, by, user string) error {
	id, now := g.info.ID, h.now()
	var limited *rate.Reservation
	if h.invites != nil && !g.isMember(user) {
		contacts, err := h.store.Contacts(ctx, app, user)
		if err != nil {
			return StoreError("contacts", err)
		}
		if !slices.Contains(contacts, by) {
			r, ok := h.invites.reserve(app, user, now)
			if !ok {
				return Errorf(qimpb.Code_LIMIT_EXCEEDED, "%s was invited into too many groups by non-contacts within the hour; they may join by id", user)
			}
			limited = r
		}
	}
	added, err := h.store.InviteMember(ctx, app, id, by, user, h.maxGroup)
	if added {
		h.changedGroup(app, id)
	} else if limited != nil {
		limited.CancelAt(now)
	}
	return h.groupErr("invite", err, "only the owner may invite a removed user")
}

// leaveGroup removes user from a group (the store hands ownership on, or
// closes the group, in the same write), and stops pushes to user's devices
// at once.
func (h *Hub) leaveGroup(ctx context.Context, app, id, user string) error {
	_, err := h.store.LeaveGroup(ctx, app, id, user)
	h.changedGroup(app, id)
	if err != nil {
		return h.groupErr("leave group", err, "")
	}
	h.router.Deliver(app, []string{user}, Event{Revoke: store.GroupConv(id)})
	return nil
}

// kickMember has the owner by remove user from a group and ban them, in
// one store write, and stops pushes to user's devices at once.
func (h *Hub) kickMember(ctx context.Context, app, id, by, user string) error {
	err := h.store.KickMember(ctx, app, id, by, user)
	h.changedGroup(app, id)
	if err != nil {
		return h.groupErr("kick", err, "")
	}
	h.router.Deliver(app, []string{user}, Event{Revoke: store.GroupConv(id)})
	return nil
}

// groupErr maps the refusals of the store's group writes to codes; banned
// is the reason given for store.ErrBanned. Other errors are store failures.
func (h *Hub) groupErr(op string, err error, banned string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound):
		return Errorf(qimpb.Code_NOT_FOUND, "no such group")
	case errors.Is(err, store.ErrNotMember):
		return errNotMember
	case errors.Is(err, store.ErrNotOwner):
		return Errorf(qimpb.Code_FORBIDDEN, "only the owner may remove members")
	case errors.Is(err, store.ErrBanned):
		return Errorf(qimpb.Code_FORBIDDEN, "%s", banned)
	case errors.Is(err, store.ErrFull):
		return Errorf(qimpb.Code_LIMIT_EXCEEDED, "the group is full (%d members)", h.maxGroup)
	default:
		return StoreError(op, err)
	}
}

func groupInfo(g store.Group) *qimpb.GroupInfo {
	return &qimpb.GroupInfo{Id: g.ID, Name: g.Name, Owner: g.Owner, Created: g.Created, LastSeq: g.LastSeq}
}

package session

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	"golang.org/x/time/rate"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/auth"
	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// Limits on request contents.
const (
	maxText        = 4096
	maxURL         = 2048
	maxClientMsgID = 64
	maxGroupName   = 128
	defaultHistory = 50
	maxHistory     = 500
	// frameOverhead is room for the Command and Response around a result.
	frameOverhead = 64
)

// handleRequest runs one request from the device and queues its response.
// Messages are queued for the committer and answered, in order, when their
// commit returns; other requests run here.
//
// A request that could have come in 0-RTT data is run before the handshake
// completes only if a replay of it is harmless: a stored MESSAGE with a
// client_msg_id (a replay is de-duplicated). Everything else waits for the
// handshake. Acknowledgements are always safe (cursors only move forward).
func (cs *convStream) handleRequest(ctx context.Context, req *qimpb.Request) {
	cs.s.hub.metrics.Request(req.Type)
	select {
	case <-cs.s.conn.HandshakeComplete():
	default:
		if !replaySafe(req) {
			if err := cs.s.handshakeDone(ctx); err != nil {
				return
			}
		}
	}
	if l := cs.s.hub.limits; l != nil && !l.allow(cs.s.app, cs.s.user) {
		cs.respond(ctx, req.RequestId, errorf(qimpb.Code_RATE_LIMITED, "too many requests; slow down"), nil)
		return
	}
	switch req.Type {
	case qimpb.RequestType_MESSAGE:
		cs.handleMessage(ctx, req)
	case qimpb.RequestType_CONTACT:
		var cr qimpb.ContactRequest
		if err := proto.Unmarshal(req.Payload, &cr); err != nil {
			cs.respond(ctx, req.RequestId, errorf(qimpb.Code_BAD_REQUEST, "contact request does not decode"), nil)
			return
		}
		res, err := cs.s.contact(ctx, &cr)
		cs.respond(ctx, req.RequestId, err, res)
	case qimpb.RequestType_GROUP:
		var gr qimpb.GroupRequest
		if err := proto.Unmarshal(req.Payload, &gr); err != nil {
			cs.respond(ctx, req.RequestId, errorf(qimpb.Code_BAD_REQUEST, "group request does not decode"), nil)
			return
		}
		res, err := cs.s.groupRequest(ctx, &gr)
		cs.respond(ctx, req.RequestId, err, res)
	default:
		cs.respond(ctx, req.RequestId, errorf(qimpb.Code_INVALID_ARGUMENT, "unknown request type %d", req.Type), nil)
	}
}

// handleMessage validates a MESSAGE request, binds the stream to its
// conversation, and either queues it for a durable commit or, with
// offline=false, delivers it to online devices only.
func (cs *convStream) handleMessage(ctx context.Context, req *qimpb.Request) {
	s := cs.s
	read := s.hub.metrics.Now()
	var m qimpb.Message
	if err := proto.Unmarshal(req.Payload, &m); err != nil {
		cs.respond(ctx, req.RequestId, errorf(qimpb.Code_BAD_REQUEST, "message does not decode"), nil)
		return
	}
	conv, err := s.checkMessage(ctx, &m)
	if err != nil {
		cs.respond(ctx, req.RequestId, err, nil)
		return
	}
	if err := cs.bindTo(conv); err != nil {
		cs.respond(ctx, req.RequestId, err, nil)
		return
	}
	m.FromUser, m.FromDevice = s.user, s.device
	m.Id, m.Seq, m.Timestamp = 0, 0, 0
	offline := true
	if len(req.Opts) > 0 {
		offline = req.Opts[0].Offline
	}
	if !offline {
		m.Timestamp = s.hub.now().UnixMilli()
		s.hub.metrics.MessageIn(false)
		s.hub.route(ctx, s.app, conv, &m, read, 0)
		cs.send(ctx, outFrame{sent: true, ts: m.Timestamp, reqID: req.RequestId})
		return
	}
	var members []string
	if m.ToUser != "" {
		members = []string{s.user, m.ToUser}
	}
	p := &pendingAppend{app: s.app, conv: conv, members: members, msg: &m, read: read}
	if err := s.hub.submit(ctx, p); err != nil {
		cs.respond(ctx, req.RequestId, err, nil)
		return
	}
	s.hub.metrics.MessageIn(true)
	cs.send(ctx, outFrame{pend: p, reqID: req.RequestId})
}

// checkMessage validates a message from the session's user and returns its
// conversation.
func (s *Session) checkMessage(ctx context.Context, m *qimpb.Message) (conv string, err error) {
	if (m.ToUser == "") == (m.ToGroup == "") {
		return "", errorf(qimpb.Code_INVALID_ARGUMENT, "set exactly one of to_user and to_group")
	}
	if len(m.ClientMsgId) > maxClientMsgID {
		return "", errorf(qimpb.Code_INVALID_ARGUMENT, "client_msg_id longer than %d bytes", maxClientMsgID)
	}
	if err := checkContent(m); err != nil {
		return "", err
	}
	if m.ToUser != "" {
		if !auth.ValidID(m.ToUser) {
			return "", errorf(qimpb.Code_INVALID_ARGUMENT, "to_user is not a valid user id")
		}
		return store.DirectConv(s.user, m.ToUser), nil
	}
	if !validGroupID(m.ToGroup) {
		return "", errorf(qimpb.Code_NOT_FOUND, "no such group")
	}
	g, err := s.hub.group(ctx, s.app, m.ToGroup)
	if err != nil {
		return "", err
	}
	if !g.isMember(s.user) {
		return "", errorf(qimpb.Code_FORBIDDEN, "not a member of the group")
	}
	return store.GroupConv(m.ToGroup), nil
}

// checkContent validates a message's type and payload.
func checkContent(m *qimpb.Message) error {
	switch m.Type {
	case qimpb.MessageType_TXT:
		txt, ok := decodeText(m.Payload)
		if !ok {
			return errorf(qimpb.Code_BAD_REQUEST, "TXT payload does not decode")
		}
		if len(txt) == 0 || len(txt) > maxText {
			return errorf(qimpb.Code_INVALID_ARGUMENT, "text must be 1 to %d bytes of UTF-8", maxText)
		}
	case qimpb.MessageType_IMAGE:
		var img qimpb.MessageImg
		if err := proto.Unmarshal(m.Payload, &img); err != nil {
			return errorf(qimpb.Code_BAD_REQUEST, "IMAGE payload does not decode")
		}
		if len(img.Url) > maxURL {
			return errorf(qimpb.Code_INVALID_ARGUMENT, "image URL longer than %d bytes", maxURL)
		}
		u, err := url.Parse(img.Url)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return errorf(qimpb.Code_INVALID_ARGUMENT, "image URL must be an http or https URL")
		}
	default:
		return errorf(qimpb.Code_INVALID_ARGUMENT, "unknown message type %d", m.Type)
	}
	return nil
}

// decodeText returns the text of an encoded MessageTxt without copying it,
// or false for exactly the payloads that proto.Unmarshal refuses: a
// malformed field, or a text that is not UTF-8. It is what checkContent
// needs of a TXT message, without decoding it into a MessageTxt and a
// string of its own.
func decodeText(b []byte) (txt []byte, ok bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num > protowire.MaxValidNumber {
			return nil, false
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || !utf8.Valid(v) {
				return nil, false
			}
			txt, b = v, b[n:]
			continue
		}
		// Another field, or field 1 with another wire type: proto.Unmarshal
		// keeps it as an unknown field if it is well formed.
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil, false
		}
		b = b[n:]
	}
	return txt, true
}

// bindTo binds the stream to conv on its first message, and refuses
// messages of another conversation afterwards. Only the reader calls it.
func (cs *convStream) bindTo(conv string) error {
	if cs.conv == "" {
		cs.conv = conv
		for {
			p := cs.s.pusherFor(conv)
			if p == nil {
				break
			}
			if p.bind(cs) {
				cs.pusher.Store(p)
				p.wakeup()
				break
			}
			if !p.isRetired() {
				break // it pushes on another stream
			}
		}
		return nil
	}
	if cs.conv != conv {
		return errorf(qimpb.Code_WRONG_STREAM, "this stream carries another conversation")
	}
	return nil
}

// contact runs a CONTACT request.
func (s *Session) contact(ctx context.Context, r *qimpb.ContactRequest) (*qimpb.ContactResult, error) {
	st := s.hub.store
	switch r.Op {
	case qimpb.ContactOp_CONTACT_ADD, qimpb.ContactOp_CONTACT_REMOVE:
		if !auth.ValidID(r.User) {
			return nil, errorf(qimpb.Code_INVALID_ARGUMENT, "user is not a valid user id")
		}
		var err error
		if r.Op == qimpb.ContactOp_CONTACT_ADD {
			err = st.AddContact(ctx, s.app, s.user, r.User)
		} else {
			err = st.RemoveContact(ctx, s.app, s.user, r.User)
		}
		if err != nil {
			return nil, storeErr("contacts", err)
		}
		return &qimpb.ContactResult{}, nil
	case qimpb.ContactOp_CONTACT_LIST:
		users, err := st.Contacts(ctx, s.app, s.user)
		if err != nil {
			return nil, storeErr("contacts", err)
		}
		return &qimpb.ContactResult{Users: users}, nil
	default:
		return nil, errorf(qimpb.Code_INVALID_ARGUMENT, "unknown contact op %d", r.Op)
	}
}

// newGroupID returns a random group id: "g" and 16 base32 characters.
func newGroupID() string {
	var b [10]byte
	rand.Read(b[:])
	return "g" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// validGroupID reports whether id has the shape of a group id (any id is
// looked up only within the caller's application).
func validGroupID(id string) bool { return auth.ValidID(id) }

func isGroupConv(conv string) bool { return strings.HasPrefix(conv, "g:") }

var errNotMember = errorf(qimpb.Code_FORBIDDEN, "not a member of the group")

// groupRequest runs a GROUP request.
func (s *Session) groupRequest(ctx context.Context, r *qimpb.GroupRequest) (*qimpb.GroupResult, error) {
	h, st := s.hub, s.hub.store
	if _, ok := qimpb.GroupOp_name[int32(r.Op)]; !ok || r.Op == qimpb.GroupOp_GROUP_OP_UNSPECIFIED {
		return nil, errorf(qimpb.Code_INVALID_ARGUMENT, "unknown group op %d", r.Op)
	}
	if r.Op == qimpb.GroupOp_GROUP_CREATE {
		if r.Name == "" || len(r.Name) > maxGroupName || !utf8.ValidString(r.Name) {
			return nil, errorf(qimpb.Code_INVALID_ARGUMENT, "group name must be 1 to %d bytes of UTF-8", maxGroupName)
		}
		g := store.Group{ID: newGroupID(), Name: r.Name, Owner: s.user, Created: h.now().UnixMilli()}
		if err := st.CreateGroup(ctx, s.app, g); err != nil {
			return nil, storeErr("create group", err)
		}
		return &qimpb.GroupResult{Group: groupInfo(g)}, nil
	}
	if r.Op == qimpb.GroupOp_GROUP_LIST {
		gs, err := st.UserGroups(ctx, s.app, s.user)
		if err != nil {
			return nil, storeErr("list groups", err)
		}
		res := &qimpb.GroupResult{}
		for _, g := range gs {
			res.Groups = append(res.Groups, groupInfo(g))
		}
		return res, nil
	}
	if !validGroupID(r.GroupId) {
		return nil, errorf(qimpb.Code_NOT_FOUND, "no such group")
	}
	g, err := h.group(ctx, s.app, r.GroupId)
	if err != nil {
		return nil, err
	}
	member := g.isMember(s.user)
	switch r.Op {
	case qimpb.GroupOp_GROUP_JOIN:
		if err := h.joinGroup(ctx, s.app, r.GroupId, s.user); err != nil {
			return nil, err
		}
	case qimpb.GroupOp_GROUP_INVITE:
		if !member {
			return nil, errNotMember
		}
		if !auth.ValidID(r.User) {
			return nil, errorf(qimpb.Code_INVALID_ARGUMENT, "user is not a valid user id")
		}
		if err := h.inviteMember(ctx, s.app, g, s.user, r.User); err != nil {
			return nil, err
		}
	case qimpb.GroupOp_GROUP_LEAVE:
		if err := h.leaveGroup(ctx, s.app, r.GroupId, s.user); err != nil {
			return nil, err
		}
	case qimpb.GroupOp_GROUP_KICK:
		if !auth.ValidID(r.User) {
			return nil, errorf(qimpb.Code_INVALID_ARGUMENT, "user is not a valid user id")
		}
		if r.User == s.user {
			return nil, errorf(qimpb.Code_INVALID_ARGUMENT, "leave with GROUP_LEAVE")
		}
		if err := h.kickMember(ctx, s.app, r.GroupId, s.user, r.User); err != nil {
			return nil, err
		}
	case qimpb.GroupOp_GROUP_MEMBERS:
		if !member {
			return nil, errNotMember
		}
		info, err := st.GetGroup(ctx, s.app, r.GroupId)
		if err != nil {
			return nil, storeErr("get group", err)
		}
		return &qimpb.GroupResult{Group: groupInfo(info), Members: g.members}, nil
	case qimpb.GroupOp_GROUP_HISTORY:
		if !member {
			return nil, errNotMember
		}
		limit := int(r.Limit)
		if limit <= 0 {
			limit = defaultHistory
		}
		limit = min(limit, maxHistory)
		conv := store.GroupConv(r.GroupId)
		ms, ok := h.recent.history(s.app, conv, r.BeforeSeq, limit)
		if !ok {
			if ms, err = st.History(ctx, s.app, conv, r.BeforeSeq, limit); err != nil {
				return nil, storeErr("history", err)
			}
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
		return nil, errorf(qimpb.Code_INVALID_ARGUMENT, "unknown group op %d", r.Op)
	}
	info, err := st.GetGroup(ctx, s.app, r.GroupId)
	if errors.Is(err, store.ErrNotFound) {
		// The request was done, and the group closed since: its last
		// member left (this one, for a LEAVE).
		return &qimpb.GroupResult{Group: groupInfo(g.info)}, nil
	}
	if err != nil {
		return nil, storeErr("get group", err)
	}
	return &qimpb.GroupResult{Group: groupInfo(info)}, nil
}

// joinGroup makes user a member of a group, unless they are banned or it
// is full, and drops the cached snapshot if they joined. The store decides
// both rules atomically with the write.
func (h *Hub) joinGroup(ctx context.Context, app, id, user string) error {
	added, err := h.store.JoinGroup(ctx, app, id, user, h.maxGroup)
	if added {
		h.forgetGroup(app, id)
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
			return storeErr("contacts", err)
		}
		if !slices.Contains(contacts, by) {
			r, ok := h.invites.reserve(app, user, now)
			if !ok {
				return errorf(qimpb.Code_LIMIT_EXCEEDED, "%s was invited into too many groups by non-contacts within the hour; they may join by id", user)
			}
			limited = r
		}
	}
	added, err := h.store.InviteMember(ctx, app, id, by, user, h.maxGroup)
	if added {
		h.forgetGroup(app, id)
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
	h.forgetGroup(app, id)
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
	h.forgetGroup(app, id)
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
		return errorf(qimpb.Code_NOT_FOUND, "no such group")
	case errors.Is(err, store.ErrNotMember):
		return errNotMember
	case errors.Is(err, store.ErrNotOwner):
		return errorf(qimpb.Code_FORBIDDEN, "only the owner may remove members")
	case errors.Is(err, store.ErrBanned):
		return errorf(qimpb.Code_FORBIDDEN, "%s", banned)
	case errors.Is(err, store.ErrFull):
		return errorf(qimpb.Code_LIMIT_EXCEEDED, "the group is full (%d members)", h.maxGroup)
	default:
		return storeErr(op, err)
	}
}

func groupInfo(g store.Group) *qimpb.GroupInfo {
	return &qimpb.GroupInfo{Id: g.ID, Name: g.Name, Owner: g.Owner, Created: g.Created, LastSeq: g.LastSeq}
}

// replaySafe reports whether running req twice is the same as running it
// once: a stored message with a client_msg_id. It reads only what it needs
// of the payload.
func replaySafe(req *qimpb.Request) bool {
	if req.Type != qimpb.RequestType_MESSAGE || (len(req.Opts) > 0 && !req.Opts[0].Offline) {
		return false
	}
	var m qimpb.Message
	return proto.Unmarshal(req.Payload, &m) == nil && m.ClientMsgId != ""
}

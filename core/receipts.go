package core

import (
	"context"
	"slices"
	"strings"

	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// Page sizes of GROUP_RECEIPTS.
const (
	defaultReceiptPage = 50
	maxReceiptPage     = 500
)

// Read moves user's read cursor of the conversation rr addresses to
// rr.Seq (forward only; durable before it returns) and tells the others
// (docs/PROTOCOL.md section 11.3): the user's other devices, the other
// user of a 1:1 conversation (unless the user hides read receipts), and
// the hubs watching a group's receipts. device is the device that read.
// The user's settings are read at each call, so that a change made on any
// device or through the HTTP API holds at once.
func (h *Hub) Read(ctx context.Context, app, user, device string, rr *qimpb.ReadRequest) (*qimpb.ReadResult, error) {
	conv, err := h.Conversation(ctx, app, user, rr.ToUser, rr.ToGroup)
	if err != nil {
		return nil, err
	}
	st, err := h.Settings(ctx, app, user)
	if err != nil {
		return nil, err
	}
	last, err := h.store.LastSeq(ctx, app, conv)
	if err != nil {
		return nil, StoreError("last seq", err)
	}
	if rr.Seq == 0 || rr.Seq > last {
		return nil, Errorf(qimpb.Code_INVALID_ARGUMENT, "seq must be 1 to the conversation's last seq (%d)", last)
	}
	share := !st.HideReadReceipts
	read, shared, err := h.store.SetRead(ctx, app, user, conv, rr.Seq, share)
	if err != nil {
		return nil, StoreError("set read", err)
	}
	res := &qimpb.ReadResult{ReadSeq: read, Unread: last - min(read, last)}
	// Each cursor is told about if this READ put it where it is. The two
	// are decided apart: the private cursor may be further already (the
	// user's own later message) while the shared one moved.
	if read == rr.Seq {
		// The user's other devices: their unread counts follow.
		own := &qimpb.Receipt{User: user, ToUser: rr.ToUser, ToGroup: rr.ToGroup, ReadPrivate: read}
		h.router.Deliver(app, []string{user}, Event{Note: &qimpb.Event{Receipt: own}, NoteDevice: device})
	}
	if !share || shared != rr.Seq {
		return res, nil
	}
	switch {
	case rr.ToGroup != "":
		h.watches.changed(app, rr.ToGroup)
	case rr.ToUser != user:
		r := &qimpb.Receipt{User: user, ToUser: user, Read: shared}
		h.router.Deliver(app, []string{rr.ToUser}, Event{Note: &qimpb.Event{Receipt: r}})
	}
	return res, nil
}

// Delivered tells the others that a device of user acknowledged conv up
// to seq (the device layer calls it once the cursor is written): the
// other user of a 1:1 conversation, and the hubs watching a group's
// receipts. It never blocks.
func (h *Hub) Delivered(app, user, conv string, seq uint64) {
	a, b, group, ok := ParseConv(conv)
	switch {
	case !ok:
	case group != "":
		h.watches.changed(app, group)
	case a != b:
		peer := a
		if peer == user {
			peer = b
		}
		r := &qimpb.Receipt{User: user, ToUser: user, Delivered: seq}
		h.router.Deliver(app, []string{peer}, Event{Note: &qimpb.Event{Receipt: r}})
	}
}

// Inbox returns the conversations of user as device sees them, with
// unread counts (docs/PROTOCOL.md section 11.2): groups first, by id,
// then 1:1 conversations by user.
func (h *Hub) Inbox(ctx context.Context, app, user, device string) (*qimpb.InboxResult, error) {
	convs, err := h.store.Inbox(ctx, app, user, device)
	if err != nil {
		return nil, StoreError("inbox", err)
	}
	return InboxOf(user, convs), nil
}

// InboxOf returns convs, user's inbox as the store gave it, as the
// protocol shows it (Hub.Inbox).
func InboxOf(user string, convs []store.ConvState) *qimpb.InboxResult {
	res := &qimpb.InboxResult{Conversations: make([]*qimpb.ConversationState, 0, len(convs))}
	for _, c := range convs {
		if cs := ConversationState(user, c); cs != nil {
			res.Conversations = append(res.Conversations, cs)
		}
	}
	slices.SortFunc(res.Conversations, func(x, y *qimpb.ConversationState) int {
		switch {
		case (x.ToGroup != "") != (y.ToGroup != ""):
			if x.ToGroup != "" {
				return -1
			}
			return 1
		case x.ToGroup != "":
			return strings.Compare(x.ToGroup, y.ToGroup)
		default:
			return strings.Compare(x.ToUser, y.ToUser)
		}
	})
	return res
}

// ConversationState returns c, a conversation of user's inbox, as the
// protocol shows it, or nil for a malformed key.
func ConversationState(user string, c store.ConvState) *qimpb.ConversationState {
	a, b, group, ok := ParseConv(c.Conv)
	if !ok {
		return nil
	}
	cs := &qimpb.ConversationState{
		ToGroup: group,
		LastSeq: c.LastSeq,
		ReadSeq: c.Read,
		Unread:  c.LastSeq - min(c.Read, c.LastSeq),
		Acked:   c.Acked,
	}
	if group == "" {
		cs.ToUser = a
		if a == user {
			cs.ToUser = b
		}
		cs.PeerDelivered, cs.PeerRead = c.PeerDelivered, c.PeerRead
	}
	return cs
}

// Settings returns user's settings in force: what the user stored, with
// hide_read_receipts forced on when the server hides every read receipt
// (Config.HideReadReceipts).
func (h *Hub) Settings(ctx context.Context, app, user string) (*qimpb.Settings, error) {
	p, err := h.store.Prefs(ctx, app, user)
	if err != nil {
		return nil, StoreError("read settings", err)
	}
	return &qimpb.Settings{HideReadReceipts: p.HideReadReceipts || h.hideReads}, nil
}

// SetSettings stores user's settings and returns those in force.
func (h *Hub) SetSettings(ctx context.Context, app, user string, s *qimpb.Settings) (*qimpb.Settings, error) {
	if err := h.store.SetPrefs(ctx, app, user, store.Prefs{HideReadReceipts: s.HideReadReceipts}); err != nil {
		return nil, StoreError("store settings", err)
	}
	return &qimpb.Settings{HideReadReceipts: s.HideReadReceipts || h.hideReads}, nil
}

// groupReceipts answers GROUP_RECEIPTS for member user of group g: the
// counts for message seq and one page of the members' receipts.
func (h *Hub) groupReceipts(ctx context.Context, app string, g *groupState, r *qimpb.GroupRequest) (*qimpb.GroupResult, error) {
	limit := int(r.Limit)
	if limit <= 0 {
		limit = defaultReceiptPage
	}
	limit = min(limit, maxReceiptPage)
	count, err := h.ReceiptCount(ctx, app, g.info.ID, r.Seq)
	if err != nil {
		return nil, err
	}
	i, _ := slices.BinarySearch(g.members, r.AfterUser)
	if i < len(g.members) && g.members[i] == r.AfterUser {
		i++
	}
	page := g.members[i:min(i+limit, len(g.members))]
	res := &qimpb.GroupResult{Count: count}
	if len(page) > 0 {
		rs, err := h.store.Receipts(ctx, app, store.GroupConv(g.info.ID), page)
		if err != nil {
			return nil, StoreError("receipts", err)
		}
		for _, x := range rs {
			res.Receipts = append(res.Receipts, &qimpb.Receipt{User: x.User, ToGroup: g.info.ID, Delivered: x.Delivered, Read: x.Read})
		}
		if i+limit < len(g.members) {
			res.NextUser = page[len(page)-1]
		}
	}
	return res, nil
}

// ReceiptCount counts, among the current members of group other than the
// sender of its message seq, those who received it and those who read it
// (shared read cursors only). seq must be 1 to the group's last seq.
func (h *Hub) ReceiptCount(ctx context.Context, app, group string, seq uint64) (*qimpb.ReceiptCount, error) {
	conv := store.GroupConv(group)
	ms, err := h.Messages(ctx, app, conv, seq-1, 1)
	if seq == 0 || (err == nil && (len(ms) == 0 || ms[0].Seq != seq)) {
		return nil, Errorf(qimpb.Code_INVALID_ARGUMENT, "seq is not a message of the group")
	}
	if err != nil {
		return nil, err
	}
	g, err := h.group(ctx, app, group)
	if err != nil {
		return nil, err
	}
	others := make([]string, 0, len(g.members))
	for _, u := range g.members {
		if u != ms[0].FromUser {
			others = append(others, u)
		}
	}
	rs, err := h.store.Receipts(ctx, app, conv, others)
	if err != nil {
		return nil, StoreError("receipts", err)
	}
	c := &qimpb.ReceiptCount{GroupId: group, Seq: seq, Members: uint32(len(others))}
	for _, x := range rs {
		if x.Delivered >= seq || x.Read >= seq { // a reader has it
			c.Delivered++
		}
		if x.Read >= seq {
			c.Read++
		}
	}
	return c, nil
}

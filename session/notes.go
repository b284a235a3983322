package session

import (
	"context"

	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/core"
	qimpb "github.com/qim-im/qim/proto"
)

// This file is the session's side of receipts, typing and presence
// (docs/PROTOCOL.md section 11): what Connected carries, the soft events
// it pushes, and the requests that make them.

// Welcome fills in what Connected carries for the device's features: the
// features granted, the user's settings (FEATURE_RECEIPTS) and its inbox
// (FEATURE_INBOX). The transport calls it before it answers CONNECT, and
// Start once the answer is written. With FEATURE_INBOX, it also starts
// the catch-up, from the same read of the inbox.
func (s *Session) Welcome(ctx context.Context, c *qimpb.Connected) error {
	c.Features = s.granted
	if s.feats.has(qimpb.Feature_FEATURE_RECEIPTS) {
		st, err := s.hub.Settings(ctx, s.app, s.user)
		if err != nil {
			return err
		}
		c.Settings = st
	}
	if s.feats.has(qimpb.Feature_FEATURE_INBOX) {
		// One read serves Connected and the catch-up (Open left it to
		// here); the session registered with the router before.
		convs, err := s.hub.Store().Inbox(ctx, s.app, s.user, s.device)
		if err != nil {
			return core.StoreError("inbox", err)
		}
		c.Inbox = core.InboxOf(s.user, convs)
		if !s.sendOnly {
			s.wg.Go(func() { s.catchUpFrom(convs) })
		}
	}
	return nil
}

// Start starts pushing events, once the device has its Connected: first
// the presence of the user's contacts (FEATURE_PRESENCE), then what comes.
func (s *Session) Start() {
	q := s.events
	if q == nil {
		return
	}
	if q.dgram != nil {
		s.wg.Go(func() { q.sendDatagrams(s.ctx) })
	}
	s.wg.Go(func() {
		var snapshot []*qimpb.Event
		if s.feats.has(qimpb.Feature_FEATURE_PRESENCE) {
			ps, err := s.hub.PresenceSnapshot(s.ctx, s.app, s.user)
			if err != nil {
				if s.ctx.Err() == nil {
					s.logger.Warn("presence snapshot", "err", err)
				}
			}
			for _, p := range ps {
				snapshot = append(snapshot, &qimpb.Event{Presence: p})
			}
		}
		q.writeEvents(s.ctx, snapshot)
	})
}

// receiveNote queues a soft event for the device, if it asked for its
// kind and did not cause it. It never blocks.
func (s *Session) receiveNote(ev *qimpb.Event, from string) {
	q := s.events
	if q == nil || (from != "" && from == s.device && noteUser(ev) == s.user) {
		return
	}
	switch {
	case ev.Receipt != nil, ev.ReceiptCount != nil:
		if !s.feats.has(qimpb.Feature_FEATURE_RECEIPTS) {
			return
		}
		if r := ev.Receipt; r != nil && r.User != s.user && r.ToGroup != "" {
			return // a group's receipts reach members through watches only
		}
	case ev.Typing != nil:
		if !s.feats.has(qimpb.Feature_FEATURE_TYPING) {
			return
		}
	case ev.Presence != nil:
		if !s.feats.has(qimpb.Feature_FEATURE_PRESENCE) {
			return
		}
	default:
		return
	}
	q.offer(ev)
}

// noteUser returns the user whose receipt, typing or presence ev reports.
func noteUser(ev *qimpb.Event) string {
	switch {
	case ev.Receipt != nil:
		return ev.Receipt.User
	case ev.Typing != nil:
		return ev.Typing.FromUser
	case ev.Presence != nil:
		return ev.Presence.User
	}
	return ""
}

// handleSoftRequest runs a READ, TYPING, PRESENCE, SETTINGS or INBOX
// request and returns its answer. ok is false for another type.
func (s *Session) handleSoftRequest(ctx context.Context, req *qimpb.Request) (res proto.Message, ok bool, err error) {
	switch req.Type {
	case qimpb.RequestType_READ:
		var rr qimpb.ReadRequest
		if err := proto.Unmarshal(req.Payload, &rr); err != nil {
			return nil, true, core.Errorf(qimpb.Code_BAD_REQUEST, "read request does not decode")
		}
		res, err := s.hub.Read(ctx, s.app, s.user, s.device, &rr)
		return res, true, err
	case qimpb.RequestType_TYPING:
		var t qimpb.Typing
		if err := proto.Unmarshal(req.Payload, &t); err != nil {
			return nil, true, core.Errorf(qimpb.Code_BAD_REQUEST, "typing does not decode")
		}
		return nil, true, s.hub.Typing(ctx, s.app, s.user, s.device, &t)
	case qimpb.RequestType_PRESENCE:
		var pr qimpb.PresenceRequest
		if err := proto.Unmarshal(req.Payload, &pr); err != nil {
			return nil, true, core.Errorf(qimpb.Code_BAD_REQUEST, "presence request does not decode")
		}
		switch pr.State {
		case qimpb.PresenceState_ONLINE, qimpb.PresenceState_AWAY:
		default:
			return nil, true, core.Errorf(qimpb.Code_INVALID_ARGUMENT, "a device sets ONLINE or AWAY")
		}
		s.presence.SetAway(pr.State == qimpb.PresenceState_AWAY)
		return s.hub.Presence(s.app, s.user), true, nil
	case qimpb.RequestType_SETTINGS:
		var st qimpb.Settings
		if err := proto.Unmarshal(req.Payload, &st); err != nil {
			return nil, true, core.Errorf(qimpb.Code_BAD_REQUEST, "settings do not decode")
		}
		res, err := s.hub.SetSettings(ctx, s.app, s.user, &st)
		return res, true, err
	case qimpb.RequestType_INBOX:
		res, err := s.hub.Inbox(ctx, s.app, s.user, s.device)
		return res, true, err
	}
	return nil, false, nil
}

// groupRequest runs a GROUP request; a GROUP_RECEIPTS with watch also
// (re)places the connection's watch of the group.
func (s *Session) groupRequest(ctx context.Context, gr *qimpb.GroupRequest) (*qimpb.GroupResult, error) {
	res, err := s.hub.Group(ctx, s.app, s.user, gr)
	if err != nil || gr.Op != qimpb.GroupOp_GROUP_RECEIPTS || !gr.Watch || s.events == nil || !s.feats.has(qimpb.Feature_FEATURE_RECEIPTS) {
		return res, err
	}
	q := s.events
	w := s.hub.WatchReceipts(s.app, gr.GroupId, gr.Seq, res.Count, func(c *qimpb.ReceiptCount) {
		q.offer(&qimpb.Event{ReceiptCount: c})
	})
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		w.Stop()
		return res, nil
	}
	if s.watches == nil {
		s.watches = make(map[string]*core.Watch)
	}
	old := s.watches[gr.GroupId]
	s.watches[gr.GroupId] = w
	s.mu.Unlock()
	if old != nil {
		old.Stop()
	}
	return res, nil
}

// HandleDatagram serves a QUIC datagram of the device: a TYPING request
// (docs/PROTOCOL.md section 11.5), never answered; anything else (a
// keepalive) is ignored. The transport calls it from the connection's
// datagram reader.
func (s *Session) HandleDatagram(b []byte) {
	var cmd qimpb.Command
	if len(b) == 0 || proto.Unmarshal(b, &cmd) != nil || cmd.Version != qimpb.Version || cmd.Command != qimpb.CommandType_REQUEST {
		return
	}
	var req qimpb.Request
	if proto.Unmarshal(cmd.Payload, &req) != nil || req.Type != qimpb.RequestType_TYPING {
		return
	}
	var t qimpb.Typing
	if proto.Unmarshal(req.Payload, &t) != nil {
		return
	}
	select {
	case <-s.conn.HandshakeComplete():
	default:
		return // 0-RTT: a replayed typing is harmless but not worth it
	}
	if err := s.hub.Typing(s.ctx, s.app, s.user, s.device, &t); err != nil {
		s.logger.Debug("typing datagram refused", "err", err)
	}
}

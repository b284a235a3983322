package session

import (
	"context"

	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/core"
	qimpb "github.com/qim-im/qim/proto"
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
	cs.s.dev.metrics.Request(req.Type)
	select {
	case <-cs.s.conn.HandshakeComplete():
	default:
		if !replaySafe(req) {
			if err := cs.s.handshakeDone(ctx); err != nil {
				return
			}
		}
	}
	if err := cs.s.hub.Allow(cs.s.app, cs.s.user); err != nil {
		cs.respond(ctx, req.RequestId, err, nil)
		return
	}
	switch req.Type {
	case qimpb.RequestType_MESSAGE:
		cs.handleMessage(ctx, req)
	case qimpb.RequestType_CONTACT:
		var cr qimpb.ContactRequest
		if err := proto.Unmarshal(req.Payload, &cr); err != nil {
			cs.respond(ctx, req.RequestId, core.Errorf(qimpb.Code_BAD_REQUEST, "contact request does not decode"), nil)
			return
		}
		res, err := cs.s.hub.Contact(ctx, cs.s.app, cs.s.user, &cr)
		cs.respond(ctx, req.RequestId, err, res)
	case qimpb.RequestType_GROUP:
		var gr qimpb.GroupRequest
		if err := proto.Unmarshal(req.Payload, &gr); err != nil {
			cs.respond(ctx, req.RequestId, core.Errorf(qimpb.Code_BAD_REQUEST, "group request does not decode"), nil)
			return
		}
		res, err := cs.s.groupRequest(ctx, &gr)
		cs.respond(ctx, req.RequestId, err, res)
	default:
		res, ok, err := cs.s.handleSoftRequest(ctx, req)
		if !ok {
			err = core.Errorf(qimpb.Code_INVALID_ARGUMENT, "unknown request type %d", req.Type)
		}
		cs.respond(ctx, req.RequestId, err, res)
	}
}

// handleMessage validates a MESSAGE request, binds the stream to its
// conversation, and either queues it for a durable commit or, with
// offline=false, delivers it to online devices only.
func (cs *convStream) handleMessage(ctx context.Context, req *qimpb.Request) {
	s := cs.s
	read := s.dev.metrics.Now()
	var m qimpb.Message
	if err := proto.Unmarshal(req.Payload, &m); err != nil {
		cs.respond(ctx, req.RequestId, core.Errorf(qimpb.Code_BAD_REQUEST, "message does not decode"), nil)
		return
	}
	conv, err := s.hub.CheckMessage(ctx, s.app, s.user, &m)
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
		ts := s.hub.Relay(ctx, s.app, conv, &m, read)
		cs.send(ctx, outFrame{sent: true, ts: ts, reqID: req.RequestId})
		return
	}
	p, err := s.hub.Submit(ctx, s.app, conv, &m, read)
	if err != nil {
		cs.respond(ctx, req.RequestId, err, nil)
		return
	}
	cs.send(ctx, outFrame{pend: p, reqID: req.RequestId})
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
		return core.Errorf(qimpb.Code_WRONG_STREAM, "this stream carries another conversation")
	}
	return nil
}

// replaySafe reports whether running req twice is the same as running it
// once: a stored message with a client_msg_id, or a READ (cursors only
// move forward). It reads only what it needs of the payload.
func replaySafe(req *qimpb.Request) bool {
	if req.Type == qimpb.RequestType_READ {
		return true
	}
	if req.Type != qimpb.RequestType_MESSAGE || (len(req.Opts) > 0 && !req.Opts[0].Offline) {
		return false
	}
	var m qimpb.Message
	return proto.Unmarshal(req.Payload, &m) == nil && m.ClientMsgId != ""
}

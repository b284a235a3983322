package httpapi

import (
	"net/http"

	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/core"
	qimpb "github.com/qim-im/qim/proto"
)

// sendMessage is POST /v1/messages: a message as the caller (a user, a
// backend acting as Qim-User, or a backend's system message), with the
// semantics of a MESSAGE request: validated by the hub, stored and
// answered after the durable commit (or, online_only, relayed unstored),
// routed to every device of its conversation's users.
func (h *Handler) sendMessage(w http.ResponseWriter, r *http.Request) {
	c, body, err := h.authJSON(w, r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	var req qimpb.SendMessageRequest
	if err := decodeJSON(body, &req); err != nil {
		h.writeError(w, r, err)
		return
	}
	ack, err := h.send(r, c, &req)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ack)
}

// send runs a SendMessageRequest of c.
func (h *Handler) send(r *http.Request, c *caller, req *qimpb.SendMessageRequest) (*qimpb.MessageAck, error) {
	ctx := r.Context()
	from, device := c.user, c.device
	if req.System {
		if !c.backend {
			return nil, core.Errorf(qimpb.Code_FORBIDDEN, "only the application's backend sends system messages")
		}
		from, device = core.SystemUser, "api"
	} else if _, err := c.actor(); err != nil {
		return nil, err
	}
	if err := h.hub.Allow(c.app, from); err != nil {
		return nil, err
	}
	read := h.hub.Metrics().Now()
	m := &qimpb.Message{Type: req.Type, ToUser: req.ToUser, ToGroup: req.ToGroup, ClientMsgId: req.ClientMsgId}
	var payload proto.Message
	switch req.Type {
	case qimpb.MessageType_TXT:
		payload = &qimpb.MessageTxt{Txt: req.Text}
	case qimpb.MessageType_IMAGE:
		payload = &qimpb.MessageImg{Url: req.ImageUrl}
	default:
		return nil, core.Errorf(qimpb.Code_INVALID_ARGUMENT, "unknown message type %d", req.Type)
	}
	var err error
	if m.Payload, err = proto.Marshal(payload); err != nil {
		return nil, err
	}
	conv, err := h.hub.CheckMessage(ctx, c.app, from, m)
	if err != nil {
		return nil, err
	}
	m.FromUser, m.FromDevice = from, device
	if req.OnlineOnly {
		return &qimpb.MessageAck{Timestamp: h.hub.Relay(ctx, c.app, conv, m, read)}, nil
	}
	p, err := h.hub.Submit(ctx, c.app, conv, m, read)
	if err != nil {
		return nil, err
	}
	// The commit goes on if the client goes away: its retry with the same
	// client_msg_id gets the stored message.
	<-p.Done()
	res, err := p.Result()
	if err != nil {
		return nil, err
	}
	return &qimpb.MessageAck{Id: res.Msg.Id, Seq: res.Msg.Seq, Timestamp: res.Msg.Timestamp, Duplicate: res.Duplicate}, nil
}

// apiMessage returns the API's view of a stored message.
func apiMessage(m *qimpb.Message) *qimpb.ApiMessage {
	am := &qimpb.ApiMessage{
		Id: m.Id, Seq: m.Seq, Timestamp: m.Timestamp,
		FromUser: m.FromUser, FromDevice: m.FromDevice, ToUser: m.ToUser, ToGroup: m.ToGroup,
		Type: m.Type, ClientMsgId: m.ClientMsgId, Conversation: core.ConvOf(m),
	}
	switch m.Type {
	case qimpb.MessageType_TXT:
		var t qimpb.MessageTxt
		if proto.Unmarshal(m.Payload, &t) == nil {
			am.Text = t.Txt
		}
	case qimpb.MessageType_IMAGE:
		var img qimpb.MessageImg
		if proto.Unmarshal(m.Payload, &img) == nil {
			am.ImageUrl = img.Url
		}
	}
	return am
}

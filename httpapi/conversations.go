package httpapi

import (
	"net/http"
	"strconv"

	"github.com/qim-im/qim/core"
	qimpb "github.com/qim-im/qim/proto"
)

// inbox is GET /v1/conversations: the conversations of the caller's user,
// with the last seq, the cursor of the caller's device (Qim-Device) and the
// unread count.
func (h *Handler) inbox(w http.ResponseWriter, r *http.Request) {
	c, err := h.authenticate(r, bodySHA256(nil))
	if err == nil {
		err = h.allow(c)
	}
	var user string
	if err == nil {
		user, err = c.actor()
	}
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	convs, err := h.hub.Store().Inbox(r.Context(), c.app, user, c.device)
	if err != nil {
		h.writeError(w, r, core.StoreError("inbox", err))
		return
	}
	res := &qimpb.Inbox{}
	for _, cs := range convs {
		conv := &qimpb.Conversation{Conversation: cs.Conv, LastSeq: cs.LastSeq, Acked: cs.Acked}
		if cs.LastSeq > cs.Acked {
			conv.Unread = cs.LastSeq - cs.Acked
		}
		a, b, group, _ := core.ParseConv(cs.Conv)
		switch {
		case group != "":
			conv.GroupId = group
		case a == user:
			conv.Peer = b
		default:
			conv.Peer = a
		}
		res.Conversations = append(res.Conversations, conv)
	}
	writeJSON(w, http.StatusOK, res)
}

// history is GET /v1/conversations/{conversation}/messages?before_seq=&limit=:
// a page of a conversation the caller's user may read (core.Hub.CanRead),
// or, for a backend that names no user, of any conversation.
func (h *Handler) history(w http.ResponseWriter, r *http.Request) {
	c, err := h.authenticate(r, bodySHA256(nil))
	if err == nil {
		err = h.allow(c)
	}
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	before, err1 := parseUint(q.Get("before_seq"))
	limit, err2 := parseUint(q.Get("limit"))
	if err1 != nil || err2 != nil {
		h.writeError(w, r, core.Errorf(qimpb.Code_INVALID_ARGUMENT, "before_seq and limit are unsigned integers"))
		return
	}
	ms, err := h.hub.History(r.Context(), c.app, c.user, r.PathValue("conversation"), before, int(min(limit, 1<<20)))
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	res := &qimpb.HistoryPage{}
	for _, m := range ms {
		res.Messages = append(res.Messages, apiMessage(m))
	}
	writeJSON(w, http.StatusOK, res)
}

// parseUint parses an optional unsigned query parameter.
func parseUint(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	return strconv.ParseUint(s, 10, 64)
}

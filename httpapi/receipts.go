package httpapi

import (
	"net/http"

	"github.com/qim-im/qim/core"
	qimpb "github.com/qim-im/qim/proto"
)

// This file is the HTTP side of read cursors and settings
// (docs/PROTOCOL.md sections 11.2 and 11.4): the READ and SETTINGS
// requests of a device, for a user caller (a user's token, or a backend
// acting as Qim-User). The inbox that shows the cursors is
// conversations.go's.

// markRead is POST /v1/conversations/{conversation}/read {"seq": N}: the
// caller's user has seen the conversation up to seq (READ). The cursor
// moves forward only and is on disk before the answer, a ReadResult; the
// user's other devices, and the other user of a 1:1 conversation unless the
// user hides read receipts, are told, except the device Qim-Device that
// read.
func (h *Handler) markRead(w http.ResponseWriter, r *http.Request) {
	var req qimpb.MarkReadRequest
	c, user := h.actAs(w, r, &req)
	if c == nil {
		return
	}
	rr, err := readRequest(user, r.PathValue("conversation"))
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	rr.Seq = req.Seq
	res, err := h.hub.Read(r.Context(), c.app, user, c.device, rr)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// readRequest returns the ReadRequest (without its seq) by which user
// addresses conversation conv: to_user the other user of a 1:1
// conversation user is one of (itself, for a conversation with itself),
// or to_group. A malformed key is INVALID_ARGUMENT, a 1:1 conversation of
// two other users FORBIDDEN; whether user may read a group is the hub's
// decision (core.Hub.Read).
func readRequest(user, conv string) (*qimpb.ReadRequest, error) {
	a, b, group, ok := core.ParseConv(conv)
	switch {
	case !ok:
		return nil, core.Errorf(qimpb.Code_INVALID_ARGUMENT, "conversation must be u:<user>:<user> (in order) or g:<group id>")
	case group != "":
		return &qimpb.ReadRequest{ToGroup: group}, nil
	case user == a:
		return &qimpb.ReadRequest{ToUser: b}, nil
	case user == b:
		return &qimpb.ReadRequest{ToUser: a}, nil
	}
	return nil, core.Errorf(qimpb.Code_FORBIDDEN, "not a user of the conversation")
}

// getSettings is GET /v1/settings: the caller's user's settings in force.
func (h *Handler) getSettings(w http.ResponseWriter, r *http.Request) {
	c, user := h.actAs(w, r, nil)
	if c == nil {
		return
	}
	res, err := h.hub.Settings(r.Context(), c.app, user)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// putSettings is PUT /v1/settings with a Settings body (SETTINGS): stores
// the caller's user's settings, all of them, and answers those in force
// (hide_read_receipts stays true on a server that hides every read
// receipt).
func (h *Handler) putSettings(w http.ResponseWriter, r *http.Request) {
	var req qimpb.Settings
	c, user := h.actAs(w, r, &req)
	if c == nil {
		return
	}
	res, err := h.hub.SetSettings(r.Context(), c.app, user, &req)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

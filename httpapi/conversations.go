package httpapi

import (
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/qim-im/qim/core"
	qimpb "github.com/qim-im/qim/proto"
)

// inbox is GET /v1/conversations: the conversations of the caller's user,
// sorted by key, each with its last seq, the user's read cursor and unread
// count, the cursor of the caller's device (Qim-Device) and, for a 1:1
// conversation, the other user's receipts. core.ConversationState computes
// them, as for the protocol's INBOX.
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
	res := &qimpb.Inbox{Conversations: make([]*qimpb.Conversation, 0, len(convs))}
	for _, cs := range convs {
		st := core.ConversationState(user, cs)
		if st == nil {
			continue // a malformed key: nothing a client could address
		}
		res.Conversations = append(res.Conversations, &qimpb.Conversation{
			Conversation:  cs.Conv,
			Peer:          st.ToUser,
			GroupId:       st.ToGroup,
			LastSeq:       st.LastSeq,
			Acked:         st.Acked,
			Unread:        st.Unread,
			ReadSeq:       st.ReadSeq,
			PeerDelivered: st.PeerDelivered,
			PeerRead:      st.PeerRead,
		})
	}
	// The stores list by key already; the API promises it whatever the
	// store.
	slices.SortFunc(res.Conversations, func(x, y *qimpb.Conversation) int {
		return strings.Compare(x.Conversation, y.Conversation)
	})
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

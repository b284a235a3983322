package httpapi

import (
	"net/http"

	"google.golang.org/protobuf/proto"

	qimpb "github.com/qim-im/qim/proto"
)

// actAs begins a request that acts as a user (its own, or the one a
// backend names), and returns its caller and that user; nil if it answered
// an error.
func (h *Handler) actAs(w http.ResponseWriter, r *http.Request, req proto.Message) (c *caller, user string) {
	c = h.begin(w, r, req, func(c *caller) error {
		_, err := c.actor()
		return err
	})
	if c == nil {
		return nil, ""
	}
	return c, c.user
}

// group runs a group request as the caller's user and answers its result.
func (h *Handler) group(w http.ResponseWriter, r *http.Request, gr *qimpb.GroupRequest) {
	c, user := h.actAs(w, r, nil)
	if c == nil {
		return
	}
	h.runGroup(w, r, c, user, gr, http.StatusOK)
}

// listGroups is GET /v1/groups (GROUP_LIST).
func (h *Handler) listGroups(w http.ResponseWriter, r *http.Request) {
	h.group(w, r, &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_LIST})
}

// createGroup is POST /v1/groups {"name": ...} (GROUP_CREATE).
func (h *Handler) createGroup(w http.ResponseWriter, r *http.Request) {
	var req qimpb.GroupRequest
	c, user := h.actAs(w, r, &req)
	if c == nil {
		return
	}
	h.runGroup(w, r, c, user, &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_CREATE, Name: req.Name}, http.StatusCreated)
}

// runGroup runs a group request as user and answers its result with
// status.
func (h *Handler) runGroup(w http.ResponseWriter, r *http.Request, c *caller, user string, gr *qimpb.GroupRequest, status int) {
	res, err := h.hub.Group(r.Context(), c.app, user, gr)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, status, res)
}

// getGroup is GET /v1/groups/{group} (GROUP_MEMBERS).
func (h *Handler) getGroup(w http.ResponseWriter, r *http.Request) {
	h.group(w, r, &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_MEMBERS, GroupId: r.PathValue("group")})
}

// addMember is POST /v1/groups/{group}/members {"user": ...}: GROUP_JOIN
// when the user is the caller's own, else GROUP_INVITE.
func (h *Handler) addMember(w http.ResponseWriter, r *http.Request) {
	var req qimpb.GroupRequest
	c, user := h.actAs(w, r, &req)
	if c == nil {
		return
	}
	gr := &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_INVITE, GroupId: r.PathValue("group"), User: req.User}
	if req.User == "" || req.User == user {
		gr.Op, gr.User = qimpb.GroupOp_GROUP_JOIN, ""
	}
	h.runGroup(w, r, c, user, gr, http.StatusOK)
}

// removeMember is DELETE /v1/groups/{group}/members/{user}: GROUP_LEAVE
// when the user is the caller's own, else GROUP_KICK.
func (h *Handler) removeMember(w http.ResponseWriter, r *http.Request) {
	c, user := h.actAs(w, r, nil)
	if c == nil {
		return
	}
	gr := &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_KICK, GroupId: r.PathValue("group"), User: r.PathValue("user")}
	if gr.User == user {
		gr.Op, gr.User = qimpb.GroupOp_GROUP_LEAVE, ""
	}
	h.runGroup(w, r, c, user, gr, http.StatusOK)
}

// listContacts is GET /v1/contacts (CONTACT_LIST).
func (h *Handler) listContacts(w http.ResponseWriter, r *http.Request) {
	h.contact(w, r, &qimpb.ContactRequest{Op: qimpb.ContactOp_CONTACT_LIST})
}

// addContact is PUT /v1/contacts/{user} (CONTACT_ADD).
func (h *Handler) addContact(w http.ResponseWriter, r *http.Request) {
	h.contact(w, r, &qimpb.ContactRequest{Op: qimpb.ContactOp_CONTACT_ADD, User: r.PathValue("user")})
}

// removeContact is DELETE /v1/contacts/{user} (CONTACT_REMOVE).
func (h *Handler) removeContact(w http.ResponseWriter, r *http.Request) {
	h.contact(w, r, &qimpb.ContactRequest{Op: qimpb.ContactOp_CONTACT_REMOVE, User: r.PathValue("user")})
}

// contact runs a contact request as the caller's user and answers its result.
func (h *Handler) contact(w http.ResponseWriter, r *http.Request, cr *qimpb.ContactRequest) {
	c, user := h.actAs(w, r, nil)
	if c == nil {
		return
	}
	res, err := h.hub.Contact(r.Context(), c.app, user, cr)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

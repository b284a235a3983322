package core

import (
	"context"

	"github.com/qim-im/qim/auth"
	qimpb "github.com/qim-im/qim/proto"
)

// Contact runs a contact request of user in app: add or remove a contact,
// or list them. Every refusal is an *Error; store failures map to
// STORE_UNAVAILABLE (CodeOf).
func (h *Hub) Contact(ctx context.Context, app, user string, r *qimpb.ContactRequest) (*qimpb.ContactResult, error) {
	st := h.store
	switch r.Op {
	case qimpb.ContactOp_CONTACT_ADD, qimpb.ContactOp_CONTACT_REMOVE:
		if !auth.ValidID(r.User) {
			return nil, Errorf(qimpb.Code_INVALID_ARGUMENT, "user is not a valid user id")
		}
		var err error
		if r.Op == qimpb.ContactOp_CONTACT_ADD {
			err = st.AddContact(ctx, app, user, r.User)
		} else {
			err = st.RemoveContact(ctx, app, user, r.User)
		}
		if err != nil {
			return nil, StoreError("contacts", err)
		}
		return &qimpb.ContactResult{}, nil
	case qimpb.ContactOp_CONTACT_LIST:
		users, err := st.Contacts(ctx, app, user)
		if err != nil {
			return nil, StoreError("contacts", err)
		}
		shown, err := h.presenceOf(ctx, app, user, users, false)
		if err != nil {
			return nil, err
		}
		return &qimpb.ContactResult{Users: users, Presence: shown}, nil
	default:
		return nil, Errorf(qimpb.Code_INVALID_ARGUMENT, "unknown contact op %d", r.Op)
	}
}

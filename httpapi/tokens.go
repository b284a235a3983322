package httpapi

import (
	"net/http"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/auth"
	"github.com/qim-im/qim/core"
	qimpb "github.com/qim-im/qim/proto"
)

// Token lifetimes of POST /v1/tokens.
const (
	defaultTokenTTL = 24 * time.Hour
	maxTokenTTL     = 30 * 24 * time.Hour
)

// backend begins a backend-only request; nil if it answered an error.
func (h *Handler) backend(w http.ResponseWriter, r *http.Request, req proto.Message) *caller {
	return h.begin(w, r, req, func(c *caller) error {
		if !c.backend {
			return core.Errorf(qimpb.Code_FORBIDDEN, "only the application's backend may do this")
		}
		return nil
	})
}

// mintToken is POST /v1/tokens: a token for a user of the application, as
// `qimd token` mints (backend only).
func (h *Handler) mintToken(w http.ResponseWriter, r *http.Request) {
	var req qimpb.MintTokenRequest
	c := h.backend(w, r, &req)
	if c == nil {
		return
	}
	if !auth.ValidID(req.User) || req.User == core.SystemUser {
		h.writeError(w, r, core.Errorf(qimpb.Code_INVALID_ARGUMENT, "user must be a valid user id other than %s", core.SystemUser))
		return
	}
	// The range is checked before the conversion to a Duration, which
	// would overflow for a large ttl_seconds.
	if req.TtlSeconds < 0 || req.TtlSeconds > int64(maxTokenTTL/time.Second) {
		h.writeError(w, r, core.Errorf(qimpb.Code_INVALID_ARGUMENT, "ttl_seconds must be 1 to %d (0: %d)", int64(maxTokenTTL/time.Second), int64(defaultTokenTTL/time.Second)))
		return
	}
	ttl := time.Duration(req.TtlSeconds) * time.Second
	if req.TtlSeconds == 0 {
		ttl = defaultTokenTTL
	}
	exp := h.hub.Now().Add(ttl).Truncate(time.Second)
	writeJSON(w, http.StatusOK, &qimpb.MintTokenResponse{User: req.User, Token: auth.Mint(c.secret, c.org, c.appkey, req.User, exp), Expires: exp.Unix()})
}

// endSessions is DELETE /v1/users/{user}/sessions: ends every session of a
// user on every node, as `qimd logout` (backend only). Tokens stay valid
// until they expire.
func (h *Handler) endSessions(w http.ResponseWriter, r *http.Request) {
	c := h.backend(w, r, nil)
	if c == nil {
		return
	}
	user := r.PathValue("user")
	if !auth.ValidID(user) {
		h.writeError(w, r, core.Errorf(qimpb.Code_INVALID_ARGUMENT, "user is not a valid user id"))
		return
	}
	if h.sessions == nil {
		h.writeError(w, r, core.Errorf(qimpb.Code_NOT_FOUND, "this server does not end sessions"))
		return
	}
	n := h.sessions.EndSessions(c.org, c.appkey, user)
	writeJSON(w, http.StatusOK, &qimpb.EndSessionsResponse{Ended: int32(n)})
}

package session

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/qim-im/qim/auth"
	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// A session lasts only as long as the token it connected with is valid:
//
//   - at the token's expiry the hub ends it with DISCONNECT TOKEN_EXPIRED;
//   - when its application's secret is removed or rotated, Revalidate ends
//     every session of the application whose token no longer verifies, with
//     DISCONNECT UNAUTHENTICATED;
//   - EndSessions ends every session of a user (all devices) with DISCONNECT
//     UNAUTHENTICATED, for operators ("log this user out everywhere").
//
// In each case the device needs a fresh token to connect again. Ending
// sessions does not invalidate tokens: a token stays valid until its expiry
// unless its application's secret changes.

// AppKeys gives the hub the applications' secrets. It must be safe for
// concurrent use; the daemon's key ring implements it over the secret files
// of the data directory.
type AppKeys interface {
	// AppSecret returns the secret of the application org/appkey, or false
	// when there is no such application.
	AppSecret(org, appkey string) (secret []byte, ok bool)
}

// Reasons sent with the DISCONNECTs that end sessions whose token is no
// longer good.
const (
	ReasonTokenExpired = "token expired"
	ReasonRevoked      = "token no longer valid: the application's secret was rotated or removed"
	ReasonEnded        = "sessions ended by the operator"
)

// sessionAuth is what the hub keeps about a live session's credentials.
type sessionAuth struct {
	org, appkey, user, token string
	expiry                   *time.Timer // ends the session at the token's expiry
}

// liveSessions tracks every open session with its credentials.
type liveSessions struct {
	mu    sync.Mutex
	byApp map[string]map[*Session]*sessionAuth // by app id; guarded by mu
}

// Authenticate checks a CONNECT and returns the application id it belongs
// to. Every refusal is an *Error; none reveals whether the user exists.
func (h *Hub) Authenticate(ctx context.Context, c *qimpb.Connect) (app string, err error) {
	if c.Device == "" {
		c.Device = "default"
	}
	for _, id := range []string{c.Org, c.Appkey, c.User, c.Device} {
		if !auth.ValidID(id) {
			return "", errorf(qimpb.Code_INVALID_ARGUMENT, "org, appkey, user and device must be 1-64 characters of A-Z a-z 0-9 . _ @ -")
		}
	}
	switch err := h.verify(c.Org, c.Appkey, c.User, c.Token); {
	case err == nil:
		return store.AppID(c.Org, c.Appkey), nil
	case errors.Is(err, auth.ErrExpired):
		return "", errorf(qimpb.Code_TOKEN_EXPIRED, ReasonTokenExpired)
	default:
		return "", errorf(qimpb.Code_UNAUTHENTICATED, "invalid token")
	}
}

// verify checks a token against the application's current secret. An
// unknown application is a bad signature.
func (h *Hub) verify(org, appkey, user, token string) error {
	var secret []byte
	if h.apps != nil {
		secret, _ = h.apps.AppSecret(org, appkey)
	}
	return auth.Verify(secret, org, appkey, user, token, h.now())
}

// track records an opened session and arms its expiry. It then checks the
// token once more, so that a session authenticated with a secret that
// Revalidate has just retired does not slip through.
func (h *Hub) track(s *Session, c *qimpb.Connect) {
	a := &sessionAuth{org: c.Org, appkey: c.Appkey, user: c.User, token: c.Token}
	h.live.mu.Lock()
	if h.live.byApp == nil {
		h.live.byApp = make(map[string]map[*Session]*sessionAuth)
	}
	m := h.live.byApp[s.app]
	if m == nil {
		m = make(map[*Session]*sessionAuth)
		h.live.byApp[s.app] = m
	}
	m[s] = a
	if exp, err := auth.Expiry(c.Token); err == nil {
		a.expiry = time.AfterFunc(exp.Sub(h.now()), func() {
			s.conn.Disconnect(qimpb.Code_TOKEN_EXPIRED, ReasonTokenExpired)
		})
	}
	h.live.mu.Unlock()
	if h.apps != nil { // nil: Authenticate refuses everything; Open is a test's
		h.recheck(s, a)
	}
}

// untrack forgets a closed session.
func (h *Hub) untrack(s *Session) {
	h.live.mu.Lock()
	defer h.live.mu.Unlock()
	m := h.live.byApp[s.app]
	if a := m[s]; a != nil && a.expiry != nil {
		a.expiry.Stop()
	}
	delete(m, s)
	if len(m) == 0 {
		delete(h.live.byApp, s.app)
	}
}

// recheck ends s if its token no longer verifies, and reports whether it
// did.
func (h *Hub) recheck(s *Session, a *sessionAuth) bool {
	switch err := h.verify(a.org, a.appkey, a.user, a.token); {
	case err == nil:
		return false
	case errors.Is(err, auth.ErrExpired):
		s.conn.Disconnect(qimpb.Code_TOKEN_EXPIRED, ReasonTokenExpired)
	default:
		s.conn.Disconnect(qimpb.Code_UNAUTHENTICATED, ReasonRevoked)
	}
	return true
}

// sessionsOf returns the live sessions of app, with their credentials, for
// which keep returns true.
func (h *Hub) sessionsOf(app string, keep func(*sessionAuth) bool) map[*Session]*sessionAuth {
	h.live.mu.Lock()
	defer h.live.mu.Unlock()
	out := make(map[*Session]*sessionAuth)
	for s, a := range h.live.byApp[app] {
		if keep(a) {
			out[s] = a
		}
	}
	return out
}

// Revalidate checks the token of every live session of the application
// org/appkey against its current secret (Config.Apps) and ends, with
// DISCONNECT UNAUTHENTICATED, those it no longer verifies: call it after
// the application's secret was removed or rotated. It returns how many
// sessions it ended.
func (h *Hub) Revalidate(org, appkey string) int {
	n := 0
	for s, a := range h.sessionsOf(store.AppID(org, appkey), func(*sessionAuth) bool { return true }) {
		if h.recheck(s, a) {
			n++
		}
	}
	return n
}

// EndSessions ends every live session of user in the application
// org/appkey, on every device, with DISCONNECT UNAUTHENTICATED and the
// reason ReasonEnded, and returns how many it ended. It does not invalidate
// the user's tokens. It ends the sessions of this process only.
func (h *Hub) EndSessions(org, appkey, user string) int {
	ss := h.sessionsOf(store.AppID(org, appkey), func(a *sessionAuth) bool { return a.user == user })
	for s := range ss {
		s.conn.Disconnect(qimpb.Code_UNAUTHENTICATED, ReasonEnded)
	}
	return len(ss)
}

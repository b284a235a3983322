package session

import (
	"sync"
	"time"

	"github.com/qim-im/qim/auth"
	"github.com/qim-im/qim/core"
	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// A session lasts only as long as the token it connected with is valid:
//
//   - at the token's expiry it ends with DISCONNECT TOKEN_EXPIRED;
//   - when its application's secret is removed or rotated, Revalidate ends
//     every session of the application whose token no longer verifies, with
//     DISCONNECT UNAUTHENTICATED;
//   - EndSessions ends every session of a user (all devices, every node of
//     a cluster) with DISCONNECT UNAUTHENTICATED, for operators ("log this
//     user out everywhere").
//
// In each case the device needs a fresh token to connect again. Ending
// sessions does not invalidate tokens: a token stays valid until its expiry
// unless its application's secret changes.

// ReasonEnded is the reason sent with the DISCONNECTs of EndSessions.
const ReasonEnded = "sessions ended by the operator"

// sessionAuth is what the device layer keeps about a live session's
// credentials.
type sessionAuth struct {
	org, appkey, user, token string
	expiry                   *time.Timer // ends the session at the token's expiry
}

// liveSessions tracks every open session with its credentials.
type liveSessions struct {
	mu    sync.Mutex
	byApp map[string]map[*Session]*sessionAuth // by app id; guarded by mu
}

// track records an opened session and arms its expiry. It then checks the
// token once more, so that a session authenticated with a secret that
// Revalidate has just retired does not slip through.
func (d *Devices) track(s *Session, c *qimpb.Connect) {
	a := &sessionAuth{org: c.Org, appkey: c.Appkey, user: c.User, token: c.Token}
	d.live.mu.Lock()
	if d.live.byApp == nil {
		d.live.byApp = make(map[string]map[*Session]*sessionAuth)
	}
	m := d.live.byApp[s.app]
	if m == nil {
		m = make(map[*Session]*sessionAuth)
		d.live.byApp[s.app] = m
	}
	m[s] = a
	if exp, err := auth.Expiry(c.Token); err == nil {
		a.expiry = time.AfterFunc(exp.Sub(d.hub.Now()), func() {
			s.conn.Disconnect(qimpb.Code_TOKEN_EXPIRED, core.ReasonTokenExpired)
		})
	}
	d.live.mu.Unlock()
	if d.hub.HasApps() { // without: Authenticate refuses everything; Open is a test's
		d.recheck(s, a)
	}
}

// untrack forgets a closed session.
func (d *Devices) untrack(s *Session) {
	d.live.mu.Lock()
	defer d.live.mu.Unlock()
	m := d.live.byApp[s.app]
	if a := m[s]; a != nil && a.expiry != nil {
		a.expiry.Stop()
	}
	delete(m, s)
	if len(m) == 0 {
		delete(d.live.byApp, s.app)
	}
}

// recheck ends s if its token no longer verifies, and reports whether it
// did.
func (d *Devices) recheck(s *Session, a *sessionAuth) bool {
	err := d.hub.Verify(a.org, a.appkey, a.user, a.token)
	if err == nil {
		return false
	}
	if code, _ := core.CodeOf(err); code == qimpb.Code_TOKEN_EXPIRED {
		s.conn.Disconnect(qimpb.Code_TOKEN_EXPIRED, core.ReasonTokenExpired)
	} else {
		s.conn.Disconnect(qimpb.Code_UNAUTHENTICATED, core.ReasonRevoked)
	}
	return true
}

// sessionsOf returns the live sessions of app, with their credentials, for
// which keep returns true.
func (d *Devices) sessionsOf(app string, keep func(*sessionAuth) bool) map[*Session]*sessionAuth {
	d.live.mu.Lock()
	defer d.live.mu.Unlock()
	out := make(map[*Session]*sessionAuth)
	for s, a := range d.live.byApp[app] {
		if keep(a) {
			out[s] = a
		}
	}
	return out
}

// Revalidate checks the token of every live session of the application
// org/appkey against its current secret (core.Config.Apps) and ends, with
// DISCONNECT UNAUTHENTICATED, those it no longer verifies: call it after
// the application's secret was removed or rotated. It returns how many
// sessions it ended.
func (d *Devices) Revalidate(org, appkey string) int {
	n := 0
	for s, a := range d.sessionsOf(store.AppID(org, appkey), func(*sessionAuth) bool { return true }) {
		if d.recheck(s, a) {
			n++
		}
	}
	return n
}

// EndSessions ends every live session of user in the application
// org/appkey, on every device and, through the router, on every node of a
// cluster, with DISCONNECT UNAUTHENTICATED and the reason ReasonEnded. It
// returns how many it ended on this node (those of other nodes end too,
// uncounted). It does not invalidate the user's tokens.
func (d *Devices) EndSessions(org, appkey, user string) int {
	app := store.AppID(org, appkey)
	n := len(d.sessionsOf(app, func(a *sessionAuth) bool { return a.user == user }))
	d.hub.Router().Deliver(app, []string{user}, core.Event{EndSessions: ReasonEnded})
	return n
}

package cluster

import (
	"encoding/base64"
	"strings"
)

// The NATS subjects of a router with prefix P (RouterConfig.Prefix):
//
//	P.u.APP.USER   events for the sessions of USER in APP (RouteEvent)
//	P.f            deliveries to many users at once, every node's users
//	               among those listed (RouteEvent with users)
//	P.b            broadcasts to every node's listeners (RouteEvent)
//	P.missed       reports of events that may have been lost (RouteMissed)
//	P.node         heartbeats of the nodes (RouteNode)
//	P.sync         barrier requests (RouteSync)
//	P.syncr.NODE   answers to NODE's barrier requests (RouteSync)
//
// APP, USER and NODE are tokens: the unpadded base64url encoding (RFC 4648 §5)
// of the app id and of the user id, whose alphabet (letters, digits, '-'
// and '_') holds none of the characters a NATS subject token must not
// contain ('.', '*', '>', whitespace). The encoding is injective, so that
// every (app, user) pair has a subject of its own whatever characters the
// ids hold ("org/app", "a.b@example.com"); the empty id, whose encoding
// would be an empty token, is the token "-", which no id encodes to
// (unpadded base64 is never one character long). The user "alice" of
// "org/app" is on "qim.u.b3JnL2FwcA.YWxpY2U".

// subjects are the subjects of one router, built once from its prefix.
type subjects struct {
	user      string // prefix of the users' subjects, "P.u."
	fanout    string
	broadcast string
	missed    string
	node      string
	sync      string
	syncReply string // prefix of the answers' subjects, "P.syncr."
}

func newSubjects(prefix string) subjects {
	return subjects{
		user:      prefix + ".u.",
		fanout:    prefix + ".f",
		broadcast: prefix + ".b",
		missed:    prefix + ".missed",
		node:      prefix + ".node",
		sync:      prefix + ".sync",
		syncReply: prefix + ".syncr.",
	}
}

// userSubject returns the subject of user's sessions in app.
func (s subjects) userSubject(app, user string) string {
	var b strings.Builder
	b.Grow(len(s.user) + tokenLen(app) + 1 + tokenLen(user))
	b.WriteString(s.user)
	appendToken(&b, app)
	b.WriteByte('.')
	appendToken(&b, user)
	return b.String()
}

// syncReplySubject returns the subject of the answers to node's barrier
// requests.
func (s subjects) syncReplySubject(node string) string {
	var b strings.Builder
	b.WriteString(s.syncReply)
	appendToken(&b, node)
	return b.String()
}

// userOf returns the user whose subject subj is, and whether subj is a
// user's subject of this prefix at all.
func (s subjects) userOf(subj string) (string, bool) {
	rest, ok := strings.CutPrefix(subj, s.user)
	if !ok {
		return "", false
	}
	_, tok, ok := strings.Cut(rest, ".")
	if !ok {
		return "", false
	}
	return decodeToken(tok)
}

// tokenLen returns the length of id's token.
func tokenLen(id string) int {
	if id == "" {
		return 1
	}
	return base64.RawURLEncoding.EncodedLen(len(id))
}

// appendToken writes id's token to b.
func appendToken(b *strings.Builder, id string) {
	if id == "" {
		b.WriteByte('-')
		return
	}
	var buf [128]byte
	n := base64.RawURLEncoding.EncodedLen(len(id))
	dst := buf[:0]
	if n > len(buf) {
		dst = make([]byte, 0, n)
	}
	b.Write(base64.RawURLEncoding.AppendEncode(dst, []byte(id)))
}

// decodeToken returns the id whose token tok is.
func decodeToken(tok string) (string, bool) {
	if tok == "-" {
		return "", true
	}
	id, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || tok == "" {
		return "", false
	}
	return string(id), true
}

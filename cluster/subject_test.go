package cluster

import (
	"strings"
	"testing"
)

// checkSubject checks that subj is the user subject of app and user: a
// valid NATS subject of four tokens, from which both ids decode.
func checkSubject(t *testing.T, s subjects, subj, app, user string) {
	t.Helper()
	toks := strings.Split(subj, ".")
	if len(toks) != 4 || toks[0] != "qim" || toks[1] != "u" {
		t.Fatalf("subject %q of (%q, %q) is not qim.u.APP.USER", subj, app, user)
	}
	for _, tok := range toks {
		if tok == "" || strings.ContainsAny(tok, "*> \t\r\n") {
			t.Fatalf("subject %q of (%q, %q) has an invalid token %q", subj, app, user, tok)
		}
	}
	if got, ok := decodeToken(toks[2]); !ok || got != app {
		t.Fatalf("subject %q: app token decodes to %q, %v, want %q", subj, got, ok, app)
	}
	if got, ok := s.userOf(subj); !ok || got != user {
		t.Fatalf("subject %q: userOf = %q, %v, want %q", subj, got, ok, user)
	}
}

// TestUserSubjects: every character of a user id, and of an app id, gives
// a valid subject of its own.
func TestUserSubjects(t *testing.T) {
	s := newSubjects("qim")
	apps := []string{"app", "org/app", "org/app.x", "a.b/c", "", "-", "_"}
	users := []string{"a", "a.b", "a_b", "a@b", "a-b", "a..b", ".a", "a.", "_", "@", "-", ".", "..", "",
		"a@b.example.com", "ABCxyz0123456789", strings.Repeat("x", 200), "b3JnL2FwcA", "-_"}
	seen := make(map[string][2]string)
	for _, app := range apps {
		for _, user := range users {
			subj := s.userSubject(app, user)
			checkSubject(t, s, subj, app, user)
			if prev, dup := seen[subj]; dup {
				t.Fatalf("(%q, %q) and %q share the subject %q", app, user, prev, subj)
			}
			seen[subj] = [2]string{app, user}
		}
	}
	if got := s.userSubject("org/app", "alice"); got != "qim.u.b3JnL2FwcA.YWxpY2U" {
		t.Errorf("the subject of alice in org/app is %q, as documented qim.u.b3JnL2FwcA.YWxpY2U", got)
	}
	for _, bad := range []string{"qim.b", "qim.u.YQ", "qim.u.YQ.Y", "qim.u.YQ.!!", "other.u.YQ.YQ", "qim.u.YQ."} {
		if user, ok := s.userOf(bad); ok {
			t.Errorf("userOf(%q) = %q, want not a user subject", bad, user)
		}
	}
}

// FuzzUserSubject: any pair of ids gives a valid subject that decodes to
// them.
func FuzzUserSubject(f *testing.F) {
	f.Add("org/app", "alice@example.com")
	f.Add("", "")
	f.Add("a.b", "-")
	s := newSubjects("qim")
	f.Fuzz(func(t *testing.T, app, user string) {
		checkSubject(t, s, s.userSubject(app, user), app, user)
	})
}

package core

import (
	"testing"
	"time"
)

// TestInviteLimitsRefill checks the per-invitee bucket: perHour invitations
// at once, then one more each time 1/perHour of an hour has passed, a
// cancelled reservation given back, and invitees counted apart.
func TestInviteLimitsRefill(t *testing.T) {
	l, err := newInviteLimits(60)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_700_000_000, 0)
	for i := range 60 {
		if _, ok := l.reserve("app", "victim", t0); !ok {
			t.Fatalf("invitation %d refused", i+1)
		}
	}
	if _, ok := l.reserve("app", "victim", t0); ok {
		t.Fatal("invitation 61 within the hour allowed")
	}
	if _, ok := l.reserve("app", "other", t0); !ok {
		t.Fatal("another invitee shares the bucket")
	}
	if _, ok := l.reserve("app2", "victim", t0); !ok {
		t.Fatal("the same user id in another application shares the bucket")
	}
	t1 := t0.Add(time.Minute)
	r, ok := l.reserve("app", "victim", t1)
	if !ok {
		t.Fatal("no invitation a minute later")
	}
	r.CancelAt(t1)
	if _, ok := l.reserve("app", "victim", t1); !ok {
		t.Fatal("a cancelled invitation was not given back")
	}
	if _, ok := l.reserve("app", "victim", t1); ok {
		t.Fatal("two invitations a minute later")
	}
}

package core

import (
	"time"

	"golang.org/x/time/rate"
)

// inviteLimits bounds how many groups a user can be added to by people who
// are not in their contacts: an invitation needs no consent, so without it
// anyone could put a user into thousands of groups. Each invitee has a
// token bucket of perHour tokens that refills over an hour, kept in an LRU
// of 100,000 invitees. An evicted bucket comes back full, so an attacker
// who invites 100,000 other users (at least 100 s at the default request
// rate) gets one more burst for a victim.
type inviteLimits struct {
	buckets *userLimits // by invitee
}

func newInviteLimits(perHour int) (*inviteLimits, error) {
	l, err := newUserLimits(float64(perHour)/3600, perHour)
	if err != nil {
		return nil, err
	}
	return &inviteLimits{buckets: l}, nil
}

// reserve takes one invitation of user's bucket at now, or reports false if
// the bucket is empty. The caller cancels the reservation if the invitation
// did not add user after all, which gives the token back.
func (l *inviteLimits) reserve(app, user string, now time.Time) (*rate.Reservation, bool) {
	r := l.buckets.limiter(app, user).ReserveN(now, 1)
	if !r.OK() {
		return nil, false
	}
	if r.DelayFrom(now) > 0 {
		r.CancelAt(now)
		return nil, false
	}
	return r, true
}

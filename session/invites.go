package session

import (
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
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
	// Static after construction.
	rate  rate.Limit
	burst int

	mu  sync.Mutex // makes get-or-create atomic
	lru *lru.Cache[userKey, *rate.Limiter]
}

func newInviteLimits(perHour int) (*inviteLimits, error) {
	c, err := lru.New[userKey, *rate.Limiter](100_000)
	if err != nil {
		return nil, err
	}
	return &inviteLimits{rate: rate.Limit(float64(perHour) / 3600), burst: perHour, lru: c}, nil
}

// reserve takes one invitation of user's bucket at now, or reports false if
// the bucket is empty. The caller cancels the reservation if the invitation
// did not add user after all, which gives the token back.
func (l *inviteLimits) reserve(app, user string, now time.Time) (*rate.Reservation, bool) {
	k := userKey{app, user}
	l.mu.Lock()
	lim, ok := l.lru.Get(k)
	if !ok {
		lim = rate.NewLimiter(l.rate, l.burst)
		l.lru.Add(k, lim)
	}
	l.mu.Unlock()
	r := lim.ReserveN(now, 1)
	if !r.OK() {
		return nil, false
	}
	if r.DelayFrom(now) > 0 {
		r.CancelAt(now)
		return nil, false
	}
	return r, true
}

package core

import (
	"sync"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"

	qimpb "github.com/qim-im/qim/proto"
)

// userLimits holds a token bucket per user. Buckets of users not seen for
// a while are evicted (the LRU holds 100,000), which at worst gives an
// evicted user a fresh burst.
type userLimits struct {
	rate  rate.Limit
	burst int
	mu    sync.Mutex // makes get-or-create atomic
	lru   *lru.Cache[userKey, *rate.Limiter]
}

func newUserLimits(r float64, burst int) (*userLimits, error) {
	c, err := lru.New[userKey, *rate.Limiter](100_000)
	if err != nil {
		return nil, err
	}
	return &userLimits{rate: rate.Limit(r), burst: burst, lru: c}, nil
}

// allow reports whether user of app may make one more request now.
func (l *userLimits) allow(app, user string) bool { return l.limiter(app, user).Allow() }

// limiter returns user's bucket, creating it full if there is none.
func (l *userLimits) limiter(app, user string) *rate.Limiter {
	k := userKey{app, user}
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.lru.Get(k)
	if !ok {
		lim = rate.NewLimiter(l.rate, l.burst)
		l.lru.Add(k, lim)
	}
	return lim
}

// Allow reports whether user of app may make one more request now: nil, or
// an *Error RATE_LIMITED once the user went beyond Config.SendRate (all
// their devices together).
func (h *Hub) Allow(app, user string) error {
	if h.limits != nil && !h.limits.allow(app, user) {
		return Errorf(qimpb.Code_RATE_LIMITED, "too many requests; slow down")
	}
	return nil
}

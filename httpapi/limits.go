package httpapi

import (
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"
)

// maxNonces bounds the nonces remembered: 9.4 MB of heap when full of
// 45-byte keys (an application and a 35-character nonce; measured).
const maxNonces = 1 << 16

// nonceCache remembers the nonces of signed backend requests for the replay
// window. It holds at most max of them; when it is full of unexpired ones,
// it refuses new nonces (the backend retries later) rather than forget one
// a replay could reuse.
type nonceCache struct {
	mu   sync.Mutex
	max  int
	seen map[string]time.Time // nonce → when it may be forgotten; guarded by mu
	next time.Time            // earliest expiry in seen, for pruning; guarded by mu
}

func newNonceCache(max int) *nonceCache {
	return &nonceCache{max: max, seen: make(map[string]time.Time)}
}

// add records nonce at now for window, and reports false if it was seen
// within the window before, or if the cache is full.
func (c *nonceCache) add(nonce string, now time.Time, window time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if exp, ok := c.seen[nonce]; ok && now.Before(exp) {
		return false
	}
	if len(c.seen) >= c.max && !now.Before(c.next) {
		c.next = time.Time{}
		for k, exp := range c.seen {
			if !now.Before(exp) {
				delete(c.seen, k)
			} else if c.next.IsZero() || exp.Before(c.next) {
				c.next = exp
			}
		}
	}
	if len(c.seen) >= c.max {
		return false
	}
	// A timestamp may be up to a window old or ahead: remember the nonce
	// for two windows, so that it cannot come back while its timestamp is
	// still accepted.
	exp := now.Add(2 * window)
	c.seen[nonce] = exp
	if c.next.IsZero() || exp.Before(c.next) {
		c.next = exp
	}
	return true
}

// failureLimit slows down guessing: each IP address may fail to
// authenticate burst times at once, then once a second; beyond that its
// requests are refused RATE_LIMITED without being checked.
type failureLimit struct {
	burst int
	byIP  *lru.Cache[netip.Addr, *rate.Limiter]
}

func newFailureLimit(burst int) (*failureLimit, error) {
	c, err := lru.New[netip.Addr, *rate.Limiter](10000)
	if err != nil {
		return nil, err
	}
	return &failureLimit{burst: burst, byIP: c}, nil
}

// allowed reports whether ip may try to authenticate now.
func (l *failureLimit) allowed(ip netip.Addr) bool {
	if l == nil {
		return true
	}
	lim, ok := l.byIP.Get(ip)
	return !ok || lim.Tokens() >= 1
}

// failed records a failed authentication from ip.
func (l *failureLimit) failed(ip netip.Addr) {
	if l == nil {
		return
	}
	lim, ok := l.byIP.Get(ip)
	if !ok {
		lim = rate.NewLimiter(1, l.burst)
		l.byIP.Add(ip, lim)
	}
	lim.Allow()
}

// remoteIP returns the IP address of the peer of r.
func remoteIP(r *http.Request) (netip.Addr, bool) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip, err := netip.ParseAddr(host)
	return ip.Unmap(), err == nil
}

// uploadQuota is the per-user upload quota: a token bucket of bytes.
type uploadQuota struct {
	perHour int64
	users   *lru.Cache[string, *rate.Limiter] // by app and user
}

func newUploadQuota(perHour int64) (*uploadQuota, error) {
	c, err := lru.New[string, *rate.Limiter](100000)
	if err != nil {
		return nil, err
	}
	return &uploadQuota{perHour: perHour, users: c}, nil
}

// take charges n bytes to user of app, and reports false (charging nothing)
// if the user's quota has not that many left.
func (q *uploadQuota) take(app, user string, n int64, now time.Time) bool {
	k := app + "\x00" + user
	lim, ok := q.users.Get(k)
	if !ok {
		lim = rate.NewLimiter(rate.Limit(float64(q.perHour)/3600), int(q.perHour))
		q.users.Add(k, lim)
	}
	return lim.AllowN(now, int(n))
}

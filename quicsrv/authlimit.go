package quicsrv

import (
	"net"
	"net/netip"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Failed CONNECTs are answered more slowly the more an IP address fails
// (whatever the port: a guesser gets a new port with every connection): the
// first authFreeFailures get their answer at once, then each answer waits
// twice as long as the one before, up to Server.AuthBackoffMax (default
// authMaxDelay). An address that has not failed for authForget is
// forgotten. Only failures are slowed: a device with a good token is never
// delayed. The table holds the most recent 65,536 addresses.
const (
	authFreeFailures = 5
	authBaseDelay    = 50 * time.Millisecond
	authMaxDelay     = 3 * time.Second
	authForget       = 10 * time.Minute
)

// authFailure is an address's record of failed CONNECTs.
type authFailure struct {
	count int
	last  time.Time
}

// authFailureDelay records a failed CONNECT from addr and returns how long
// to wait before answering it.
func (s *Server) authFailureDelay(addr net.Addr) time.Duration {
	maxDelay := s.AuthBackoffMax
	if maxDelay == 0 {
		maxDelay = authMaxDelay
	}
	ip, ok := addrIP(addr)
	if !ok || maxDelay < 0 {
		return 0
	}
	s.authMu.Lock()
	defer s.authMu.Unlock()
	if s.authFailures == nil {
		s.authFailures, _ = lru.New[netip.Addr, *authFailure](65536)
	}
	f, ok := s.authFailures.Get(ip)
	now := time.Now()
	if !ok || now.Sub(f.last) > authForget {
		f = &authFailure{}
		s.authFailures.Add(ip, f)
	}
	f.count++
	f.last = now
	if f.count <= authFreeFailures {
		return 0
	}
	d := authBaseDelay << min(f.count-authFreeFailures-1, 16)
	return min(d, maxDelay)
}

func addrIP(a net.Addr) (netip.Addr, bool) {
	if u, ok := a.(*net.UDPAddr); ok {
		ip, ok := netip.AddrFromSlice(u.IP)
		return ip.Unmap(), ok
	}
	return netip.Addr{}, false
}

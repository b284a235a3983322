package cluster

import (
	"slices"
	"sync"
	"time"
)

// members are the other nodes a router heard from recently: a node is
// live until it has been silent for its expiry (three heartbeat
// intervals) or said it is leaving.
type members struct {
	expiry time.Duration

	mu   sync.Mutex
	seen map[string]time.Time // guarded by mu: when each node was last heard
}

func newMembers(expiry time.Duration) *members {
	return &members{expiry: expiry, seen: make(map[string]time.Time)}
}

// heard records that node was heard at now, and reports whether it was
// not live before.
func (m *members) heard(node string, now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	last, ok := m.seen[node]
	m.seen[node] = now
	return !ok || now.Sub(last) > m.expiry
}

// left forgets node.
func (m *members) left(node string) {
	m.mu.Lock()
	delete(m.seen, node)
	m.mu.Unlock()
}

// live returns the live nodes at now, sorted, and forgets the others.
func (m *members) live(now time.Time) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for node, last := range m.seen {
		if now.Sub(last) > m.expiry {
			delete(m.seen, node)
			continue
		}
		out = append(out, node)
	}
	slices.Sort(out)
	return out
}

// isLive reports whether node is live at now.
func (m *members) isLive(node string, now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	last, ok := m.seen[node]
	return ok && now.Sub(last) <= m.expiry
}

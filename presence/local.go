package presence

import (
	"encoding/binary"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	qimpb "github.com/qim-im/qim/proto"
)

// maxShards is the number of lock shards of a large tracker.
const maxShards = 64

// Local is a Tracker that keeps presence in this node's memory. Its users
// are spread over shards, each with its own lock, so that many users can
// join at once. Each shard has one timer, for the earliest deadline (the end
// of a grace period or of a coalescing window) of its users; no goroutine
// runs while nothing is due or to be published.
type Local struct {
	// Static after construction.
	grace    time.Duration
	coalesce time.Duration
	publish  func(Change)
	start    time.Time // deadlines are kept as durations since start (monotonic)
	seed     maphash.Seed
	shards   []shard
	maxIdle  int64 // bound on idle

	// Shared by the shards.
	idle atomic.Int64 // offline users remembered, in all shards' idle lists

	closed  atomic.Bool    // set by Close: drainers stop publishing
	drainWG sync.WaitGroup // drain goroutines; Add under a shard's mu while not closed
}

var _ Tracker = (*Local)(nil)

// shard holds the users whose key hashes to it.
type shard struct {
	mu sync.Mutex
	// Guarded by mu.
	closed   bool
	users    map[string]*entry // by key (see appendKey)
	idle     idleList          // the offline entries with nothing pending
	pending  pendingHeap       // the entries with a deadline, earliest first
	timer    *time.Timer       // fires at timerAt; created on first use
	timerAt  time.Duration     // the deadline timer is armed for; 0 if stopped
	queue    []Change          // decided, not yet handed to the drainer
	spare    []Change          // the drainer's last batch, for reuse
	draining bool              // a drain goroutine runs for this shard

	_ [64]byte // keeps the next shard's mu off this one's cache line
}

// NewLocal returns a tracker configured by cfg. It starts no goroutine:
// one runs for a shard only while changes wait to be published.
func NewLocal(cfg Config) *Local {
	l := &Local{
		grace:    cfg.Grace,
		coalesce: cfg.Coalesce,
		publish:  cfg.Publish,
		start:    time.Now(),
		seed:     maphash.MakeSeed(),
	}
	if l.grace <= 0 {
		l.grace = DefaultGrace
	}
	if l.coalesce <= 0 {
		l.coalesce = DefaultCoalesce
	}
	maxUsers := cfg.MaxUsers
	if maxUsers <= 0 {
		maxUsers = DefaultMaxUsers
	}
	l.maxIdle = int64(maxUsers)
	// Each shard has its own LRU, and the one that goes over the bound
	// forgets its oldest user: the LRU is only roughly global. A small bound
	// gets fewer shards, so that each still holds a useful LRU.
	n := maxShards
	for n > 1 && n*16 > maxUsers {
		n /= 2
	}
	l.shards = make([]shard, n)
	for i := range l.shards {
		l.shards[i].users = make(map[string]*entry)
	}
	return l
}

// Join records a new connection of user's device (see Tracker.Join). The
// device is not used by Local: every connection counts alike.
func (l *Local) Join(app, user, device string, away bool) Conn {
	var buf [128]byte
	k := appendKey(buf[:0], app, user)
	s := l.shardOf(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return closedConn{}
	}
	e := s.users[string(k)]
	if e == nil {
		e = &entry{key: string(k)}
		s.users[e.key] = e
	}
	if e.inIdle {
		l.unidle(s, e)
	}
	e.conns++
	if away {
		e.away++
	}
	e.graceEnd = 0
	l.settle(s, e, time.Now())
	return &localConn{l: l, s: s, e: e, away: away}
}

// Get returns the published presence of users (see Tracker.Get). Its
// last_seen is now for a user online or away.
func (l *Local) Get(app string, users []string) []*qimpb.Presence {
	out := make([]*qimpb.Presence, len(users))
	var buf [128]byte
	for i, u := range users {
		k := appendKey(buf[:0], app, u)
		s := l.shardOf(k)
		p := &qimpb.Presence{User: u}
		s.mu.Lock()
		if e := s.users[string(k)]; e != nil {
			p.State, p.Since, p.LastSeen = e.pub, e.since, e.lastSeen
			if p.State != qimpb.PresenceState_OFFLINE {
				p.LastSeen = time.Now().UnixMilli()
			}
		}
		s.mu.Unlock()
		out[i] = p
	}
	return out
}

// Close stops the timers and waits for the drainers (see Tracker.Close).
// Joins after Close return a Conn that does nothing.
func (l *Local) Close() {
	l.closed.Store(true)
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		s.closed = true
		if s.timer != nil {
			s.timer.Stop()
		}
		s.queue = nil
		s.mu.Unlock()
	}
	l.drainWG.Wait()
}

// shardOf returns the shard of the user with key k.
func (l *Local) shardOf(k []byte) *shard {
	return &l.shards[maphash.Bytes(l.seed, k)&uint64(len(l.shards)-1)]
}

// enqueue queues c for publishing and starts the shard's drainer if it is
// not running. s.mu is held.
func (l *Local) enqueue(s *shard, c Change) {
	if l.publish == nil {
		return
	}
	s.queue = append(s.queue, c)
	if !s.draining {
		s.draining = true
		l.drainWG.Add(1)
		go l.drain(s)
	}
}

// drain publishes the changes queued in s, in order, until none is left or
// the tracker is closed. It runs in its own goroutine, at most one per shard,
// so the changes of a user are published in the order they were decided.
func (l *Local) drain(s *shard) {
	defer l.drainWG.Done()
	var batch []Change
	for {
		s.mu.Lock()
		if batch != nil {
			clear(batch)
			s.spare = batch[:0]
		}
		if s.closed || len(s.queue) == 0 {
			s.draining = false
			s.mu.Unlock()
			return
		}
		batch, s.queue, s.spare = s.queue, s.spare, nil
		s.mu.Unlock()
		for _, c := range batch {
			if l.closed.Load() {
				break
			}
			l.publish(c)
		}
	}
}

// localConn is a connection handle of Local.
type localConn struct {
	l *Local
	s *shard
	e *entry
	// Guarded by s.mu.
	away bool
	left bool
}

// SetAway marks the connection as away or not.
func (c *localConn) SetAway(away bool) {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	if c.left || c.s.closed || c.away == away {
		return
	}
	c.away = away
	if away {
		c.e.away++
	} else {
		c.e.away--
	}
	c.l.settle(c.s, c.e, time.Now())
}

// Leave records the end of the connection; the user's grace period starts
// if it was the last one.
func (c *localConn) Leave() {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	if c.left || c.s.closed {
		return
	}
	c.left = true
	e := c.e
	e.conns--
	if c.away {
		e.away--
	}
	now := time.Now()
	if e.conns == 0 {
		e.leftAt = now.UnixMilli()
		e.graceEnd = now.Sub(c.l.start) + c.l.grace
	}
	c.l.settle(c.s, e, now)
}

// closedConn is the handle of a connection that joined a closed tracker.
type closedConn struct{}

func (closedConn) SetAway(bool) {}
func (closedConn) Leave()       {}

// appendKey appends the key of app's user to b: the length of app as a
// uvarint, app, then user (unambiguous whatever bytes the names hold).
func appendKey(b []byte, app, user string) []byte {
	b = binary.AppendUvarint(b, uint64(len(app)))
	b = append(b, app...)
	return append(b, user...)
}

// splitKey returns the app and user of key k, sharing k's bytes.
func splitKey(k string) (app, user string) {
	n, w := binary.Uvarint([]byte(k[:min(len(k), binary.MaxVarintLen64)]))
	return k[w : w+int(n)], k[w+int(n):]
}

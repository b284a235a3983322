package presence

import (
	"time"

	qimpb "github.com/qim-im/qim/proto"
)

// entry is what a shard knows of one user. All its fields are guarded by
// the shard's mu. Deadlines are durations since Local.start, zero for none
// (a real deadline is at least a grace period or a window after start).
type entry struct {
	key        string // appendKey(app, user); the key of the shard's map
	prev, next *entry // in the shard's idle list, while inIdle

	at   time.Duration // the next deadline, while in the shard's pending heap; 0 if none
	hidx int32         // index in the shard's pending heap, while at is set

	conns, away int32 // live connections, and how many of them are away

	// The state, as the connections make it (cur), and as published (pub).
	cur, pub qimpb.PresenceState
	curSince int64 // Unix ms: when cur began
	since    int64 // Unix ms: the since of the published presence
	lastSeen int64 // Unix ms: the last_seen of the published presence
	leftAt   int64 // Unix ms: when the last connection left

	graceEnd  time.Duration // while conns is 0 and the grace period runs
	windowEnd time.Duration // while a coalescing window is open (cur != pub)

	inIdle bool // in the shard's idle list
	gone   bool // forgotten: no longer in the shard's map
}

// state is the user's state as its connections make it: during the grace
// period, the state it had before the last connection left.
func (e *entry) state() qimpb.PresenceState {
	switch {
	case e.conns > e.away:
		return qimpb.PresenceState_ONLINE
	case e.conns > 0:
		return qimpb.PresenceState_AWAY
	case e.graceEnd != 0:
		return e.cur
	default:
		return qimpb.PresenceState_OFFLINE
	}
}

// settle brings e up to date at now, after a change of its connections or
// when one of its deadlines has passed: it ends the grace period when due, opens a
// coalescing window when the state departs from the published one (and
// closes it when the state comes back), publishes the state when the window
// is over, schedules e for its next deadline, and files e among the idle
// entries when nothing is left to do. s.mu is held.
func (l *Local) settle(s *shard, e *entry, now time.Time) {
	mono := now.Sub(l.start)
	if e.conns == 0 && e.graceEnd != 0 && mono >= e.graceEnd {
		e.graceEnd = 0
	}
	if st := e.state(); st != e.cur {
		e.cur = st
		e.curSince = now.UnixMilli()
		if st == qimpb.PresenceState_OFFLINE {
			e.curSince = e.leftAt // offline since the last connection left
		}
	}
	switch {
	case e.cur == e.pub:
		e.windowEnd = 0
	case e.windowEnd == 0:
		e.windowEnd = mono + l.coalesce
	case mono >= e.windowEnd:
		e.windowEnd = 0
		e.pub = e.cur
		e.since = max(e.curSince, e.since+1)
		e.lastSeen = now.UnixMilli()
		if e.pub == qimpb.PresenceState_OFFLINE {
			e.lastSeen = e.leftAt
		}
		app, user := splitKey(e.key)
		l.enqueue(s, Change{App: app, Presence: &qimpb.Presence{
			User: user, State: e.pub, LastSeen: e.lastSeen, Since: e.since,
		}})
	}

	next := e.windowEnd
	if e.graceEnd != 0 && (next == 0 || e.graceEnd < next) {
		next = e.graceEnd
	}
	l.schedule(s, e, next, mono)

	if e.conns == 0 && next == 0 && !e.inIdle {
		// Offline with nothing pending: remembered for its last_seen, if
		// it has one, while the bound allows.
		if e.lastSeen == 0 {
			l.forget(s, e)
			return
		}
		s.idle.pushFront(e)
		if l.idle.Add(1) > l.maxIdle {
			l.forget(s, s.idle.back())
		}
	}
}

// unidle takes e out of s's idle list. s.mu is held.
func (l *Local) unidle(s *shard, e *entry) {
	s.idle.remove(e)
	l.idle.Add(-1)
}

// forget removes e from s. s.mu is held.
func (l *Local) forget(s *shard, e *entry) {
	if e.inIdle {
		l.unidle(s, e)
	}
	delete(s.users, e.key)
	e.gone = true
}

// idleList is a doubly linked list of entries, the most recently added
// first.
type idleList struct {
	head, tail *entry
	n          int
}

func (q *idleList) pushFront(e *entry) {
	e.prev, e.next = nil, q.head
	if q.head != nil {
		q.head.prev = e
	} else {
		q.tail = e
	}
	q.head = e
	e.inIdle = true
	q.n++
}

func (q *idleList) remove(e *entry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		q.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		q.tail = e.prev
	}
	e.prev, e.next = nil, nil
	e.inIdle = false
	q.n--
}

func (q *idleList) back() *entry { return q.tail }

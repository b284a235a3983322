package presence

import (
	"container/heap"
	"time"
)

// Each shard keeps the entries with a deadline (the end of a grace period
// or of a coalescing window) in a min-heap, and one timer for the earliest:
// a burst of deadlines (many users reconnecting at once) runs as one
// callback per shard, under one lock, rather than a goroutine per user.

// schedule sets e's next deadline to next (0: none) and arms s's timer for
// the earliest deadline of s. mono is now, as a duration since l.start.
// s.mu is held.
func (l *Local) schedule(s *shard, e *entry, next, mono time.Duration) {
	switch {
	case next == e.at:
		return
	case e.at == 0:
		e.at = next
		heap.Push(&s.pending, e)
	case next == 0:
		heap.Remove(&s.pending, int(e.hidx))
		e.at = 0
	default:
		e.at = next
		heap.Fix(&s.pending, int(e.hidx))
	}
	l.arm(s, mono)
}

// arm arms s's timer for its earliest deadline, or stops it if s has none.
// s.mu is held.
func (l *Local) arm(s *shard, mono time.Duration) {
	if len(s.pending) == 0 {
		if s.timerAt != 0 {
			s.timer.Stop()
			s.timerAt = 0
		}
		return
	}
	next := s.pending[0].at
	switch {
	case next == s.timerAt:
	case s.timer == nil:
		s.timer = time.AfterFunc(next-mono, func() { l.fire(s) })
		s.timerAt = next
	default:
		s.timer.Reset(next - mono)
		s.timerAt = next
	}
}

// fire is the callback of s's timer: it settles every entry whose deadline
// has passed and arms the timer for the next. It runs in a goroutine of its
// own and may be late, or early when the timer was reset after it started:
// it only acts on deadlines passed.
func (l *Local) fire(s *shard) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.timerAt = 0 // not armed any more, unless reset since: arm below
	now := time.Now()
	mono := now.Sub(l.start)
	// Take the due entries out first: settling one schedules it for a
	// later deadline, which must not be taken again in this round.
	var due []*entry
	for len(s.pending) > 0 && s.pending[0].at <= mono {
		e := heap.Pop(&s.pending).(*entry)
		e.at = 0
		due = append(due, e)
	}
	for _, e := range due {
		l.settle(s, e, now)
	}
	l.arm(s, mono)
}

// pendingHeap is a min-heap of entries by deadline (container/heap).
type pendingHeap []*entry

func (h pendingHeap) Len() int           { return len(h) }
func (h pendingHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h pendingHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].hidx, h[j].hidx = int32(i), int32(j)
}

func (h *pendingHeap) Push(x any) {
	e := x.(*entry)
	e.hidx = int32(len(*h))
	*h = append(*h, e)
}

func (h *pendingHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}

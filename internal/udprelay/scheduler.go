package udprelay

import (
	"math/rand/v2"
	"sync"
	"time"
)

// reorderHold is how long a packet picked by Config.Reorder waits for the
// next packet in its direction. When none comes in time it is sent anyway,
// late, so a reordered packet at the end of a burst is not held forever.
const reorderHold = 10 * time.Millisecond

// maxBatch bounds how many due packets the scheduler takes from its queue
// under one lock.
const maxBatch = 64

// packet is one datagram on its way through the relay.
type packet struct {
	due  int64   // when to send it, in nanoseconds since Relay.epoch
	seq  uint64  // tie-break that keeps equal due times in arrival order
	buf  *[]byte // from Relay.getBuf; returned by the scheduler once sent
	n    int     // datagram length in *buf
	flow *flow   // the client flow it belongs to
}

// data returns the datagram.
func (p *packet) data() []byte { return (*p.buf)[:p.n] }

// direction names one way through the relay.
type direction int

const (
	clientToServer direction = iota
	serverToClient
)

// scheduler applies the impairments of one direction and sends each packet
// when it is due. Any goroutine may call push; one goroutine runs run.
type scheduler struct {
	// Static after construction.
	relay *Relay
	stats *counters
	send  func(p *packet) error // writes p towards its receiver
	wake  chan struct{}         // capacity 1: the earliest deadline changed

	mu       sync.Mutex // guards the fields below
	rng      *rand.Rand
	queue    packetHeap
	seq      uint64
	lastDue  int64  // largest due time handed out, for Config.NoReorder
	held     packet // packet held back by Config.Reorder, if hasHeld
	hasHeld  bool
	heldTill int64 // when held is sent even if no packet follows it
}

// newScheduler returns the scheduler of direction dir, which sends with send.
func newScheduler(r *Relay, dir direction, seed uint64, send func(*packet) error) *scheduler {
	return &scheduler{
		relay: r,
		stats: &r.stats[dir],
		send:  send,
		wake:  make(chan struct{}, 1),
		rng:   rand.New(rand.NewPCG(seed, uint64(dir))),
	}
}

// push takes ownership of p, decides its fate under the current Config and
// queues it (and perhaps a duplicate) for sending. It never blocks on I/O.
func (s *scheduler) push(p packet) {
	r := s.relay
	s.stats.received.Add(1)
	if r.blackhole.Load() {
		s.stats.dropped.Add(1)
		r.putBuf(p.buf)
		return
	}
	cfg := r.cfg.Load()
	loss := cfg.Loss
	if p.n > 0 && (*p.buf)[0]&0x80 != 0 && cfg.HandshakeLoss != 0 {
		loss = max(cfg.HandshakeLoss, 0)
	}

	s.mu.Lock()
	if s.chance(loss) {
		s.mu.Unlock()
		s.stats.dropped.Add(1)
		r.putBuf(p.buf)
		return
	}
	inFlight := len(s.queue)
	if s.hasHeld {
		inFlight++
	}
	if inFlight >= cfg.maxQueue() {
		s.mu.Unlock()
		s.stats.queueFull.Add(1)
		r.putBuf(p.buf)
		return
	}

	now := r.now()
	p.due = now + int64(cfg.Delay)
	if cfg.Jitter > 0 {
		p.due += s.rng.Int64N(int64(cfg.Jitter))
	}
	if cfg.NoReorder {
		p.due = max(p.due, s.lastDue)
	}
	s.lastDue = max(s.lastDue, p.due)

	firstSeq := s.seq
	var dup *packet
	if s.chance(cfg.Duplicate) {
		dup = &packet{due: p.due, buf: r.getBuf(p.n), n: p.n, flow: p.flow}
		copy(*dup.buf, p.data())
		s.stats.duplicated.Add(1)
	}
	wake := false
	if !s.hasHeld && s.chance(cfg.Reorder) {
		s.held, s.hasHeld, s.heldTill = p, true, now+int64(reorderHold)
		wake = true
	} else {
		s.enqueue(p)
		if s.hasHeld {
			h := s.held
			s.held, s.hasHeld = packet{}, false
			h.due = max(h.due, p.due)
			s.enqueue(h)
			s.stats.reordered.Add(1)
		}
	}
	if dup != nil {
		s.enqueue(*dup)
	}
	if len(s.queue) > 0 && s.queue[0].seq >= firstSeq {
		wake = true // a new packet is now the earliest
	}
	s.mu.Unlock()

	if wake {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// chance reports whether an event of probability prob happens. It draws a
// random number only for probabilities strictly between 0 and 1. The caller
// holds s.mu.
func (s *scheduler) chance(prob float64) bool {
	switch {
	case prob <= 0:
		return false
	case prob >= 1:
		return true
	default:
		return s.rng.Float64() < prob
	}
}

// enqueue adds p to the queue. The caller holds s.mu.
func (s *scheduler) enqueue(p packet) {
	p.seq = s.seq
	s.seq++
	s.queue.push(p)
}

// run sends packets as they fall due until done is closed. It runs in its
// own goroutine; packets still queued when it returns are discarded.
func (s *scheduler) run(done <-chan struct{}) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	batch := make([]packet, 0, maxBatch)
	for {
		var wait time.Duration
		batch, wait = s.takeDue(batch[:0])
		for i := range batch {
			s.deliver(&batch[i])
		}
		clear(batch)
		switch {
		case len(batch) == maxBatch:
			// More may be due already; look again without sleeping.
			select {
			case <-done:
				return
			default:
				continue
			}
		case wait >= 0:
			timer.Reset(wait)
		default:
			timer.Stop()
		}
		select {
		case <-done:
			timer.Stop()
			return
		case <-s.wake:
		case <-timer.C:
		}
	}
}

// takeDue appends to batch the packets due now, at most maxBatch, releasing
// a held packet whose wait has run out. It returns how long until the next
// packet falls due, or -1 if nothing is waiting.
func (s *scheduler) takeDue(batch []packet) ([]packet, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.relay.now()
	if s.hasHeld && now >= s.heldTill {
		h := s.held
		s.held, s.hasHeld = packet{}, false
		s.enqueue(h)
	}
	for len(s.queue) > 0 && s.queue[0].due <= now && len(batch) < maxBatch {
		batch = append(batch, s.queue.pop())
	}
	next := int64(-1)
	if len(s.queue) > 0 {
		next = s.queue[0].due
	}
	if s.hasHeld && (next < 0 || s.heldTill < next) {
		next = s.heldTill
	}
	if next < 0 {
		return batch, -1
	}
	return batch, time.Duration(max(next-now, 0))
}

// deliver sends p unless the link is blackholed, counts the outcome and
// recycles p's buffer.
func (s *scheduler) deliver(p *packet) {
	switch {
	case s.relay.blackhole.Load():
		s.stats.dropped.Add(1)
	case s.send(p) != nil:
		s.stats.errors.Add(1)
	default:
		s.stats.forwarded.Add(1)
	}
	s.relay.putBuf(p.buf)
}

// packetHeap is a binary min-heap of packets ordered by due time, then by
// sequence number.
type packetHeap []packet

// less orders packets by due time, then by arrival.
func (h packetHeap) less(i, j int) bool {
	if h[i].due != h[j].due {
		return h[i].due < h[j].due
	}
	return h[i].seq < h[j].seq
}

// push adds p to the heap.
func (h *packetHeap) push(p packet) {
	*h = append(*h, p)
	q := *h
	for i := len(q) - 1; i > 0; {
		parent := (i - 1) / 2
		if !q.less(i, parent) {
			break
		}
		q[i], q[parent] = q[parent], q[i]
		i = parent
	}
}

// pop removes and returns the earliest packet. The heap must not be empty.
func (h *packetHeap) pop() packet {
	q := *h
	top := q[0]
	last := len(q) - 1
	q[0] = q[last]
	q[last] = packet{}
	q = q[:last]
	for i := 0; ; {
		smallest, l, r := i, 2*i+1, 2*i+2
		if l < len(q) && q.less(l, smallest) {
			smallest = l
		}
		if r < len(q) && q.less(r, smallest) {
			smallest = r
		}
		if smallest == i {
			break
		}
		q[i], q[smallest] = q[smallest], q[i]
		i = smallest
	}
	*h = q
	return top
}

package baseline

import (
	"bufio"
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/quic-go/quic-go"
)

// queueLen is the length of a subscriber's queue of frames. A publisher
// that finds a queue full waits: the baseline drops nothing.
const queueLen = 128

// maxBatch bounds how many bytes of queued frames a subscriber writes to
// its stream in one call.
const maxBatch = 32 << 10

// hub holds the fan-out channels by name.
type hub struct {
	batches sync.Pool // *[]byte write buffers of subscribers, shared

	mu       sync.Mutex
	channels map[string]*channel // guarded by mu
}

// channel is one fan-out channel.
type channel struct {
	refs int                           // its publishers and subscribers; guarded by hub.mu
	subs atomic.Pointer[[]*subscriber] // replaced under hub.mu, never modified
}

// subscriber is one subscribed stream, written by its own goroutine from
// q.
type subscriber struct {
	q    chan []byte   // frames to write, each shared with other subscribers: read only
	done chan struct{} // closed when the subscriber stops reading q
}

func newHub() *hub {
	return &hub{
		batches:  sync.Pool{New: func() any { b := make([]byte, 0, maxBatch); return &b }},
		channels: make(map[string]*channel),
	}
}

// acquire returns the channel named name, creating it if needed. Every
// acquire is paired with a release.
func (h *hub) acquire(name string) *channel {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch := h.channels[name]
	if ch == nil {
		ch = &channel{}
		ch.subs.Store(new([]*subscriber))
		h.channels[name] = ch
	}
	ch.refs++
	return ch
}

// release drops a reference to ch, forgetting the channel with its last.
func (h *hub) release(name string, ch *channel) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch.refs--
	if ch.refs == 0 {
		delete(h.channels, name)
	}
}

// join acquires the channel named name and adds sub to its subscribers.
func (h *hub) join(name string, sub *subscriber) *channel {
	ch := h.acquire(name)
	h.mu.Lock()
	defer h.mu.Unlock()
	old := *ch.subs.Load()
	subs := append(make([]*subscriber, 0, len(old)+1), old...)
	subs = append(subs, sub)
	ch.subs.Store(&subs)
	return ch
}

// leave removes sub from ch's subscribers and releases ch.
func (h *hub) leave(name string, ch *channel, sub *subscriber) {
	h.mu.Lock()
	old := *ch.subs.Load()
	subs := make([]*subscriber, 0, len(old))
	for _, s := range old {
		if s != sub {
			subs = append(subs, s)
		}
	}
	ch.subs.Store(&subs)
	h.mu.Unlock()
	h.release(name, ch)
}

// subscribe reads the channel's name, joins it, answers with an empty
// frame, and then writes every frame published on the channel to str until
// the connection ends. Frames queued together are written in one call.
func (s *Server) subscribe(ctx context.Context, str *quic.Stream) error {
	name, err := readFrame(bufio.NewReaderSize(str, 512), nil)
	if err != nil {
		return fmt.Errorf("read channel name: %w", err)
	}
	sub := &subscriber{q: make(chan []byte, queueLen), done: make(chan struct{})}
	ch := s.hub.join(string(name), sub)
	defer s.hub.leave(string(name), ch, sub)
	defer close(sub.done)
	s.subscribers.Add(1)
	defer s.subscribers.Add(-1)

	if _, err := str.Write(appendFrame(nil, nil)); err != nil {
		return err
	}
	for {
		select {
		case f := <-sub.q:
			bp := s.hub.batches.Get().(*[]byte)
			batch := append((*bp)[:0], f...)
		drain:
			for len(batch) < maxBatch {
				select {
				case f := <-sub.q:
					batch = append(batch, f...)
				default:
					break drain
				}
			}
			_, err := str.Write(batch)
			*bp = batch
			s.hub.batches.Put(bp)
			if err != nil {
				return err
			}
		case <-ctx.Done():
			return nil
		}
	}
}

// publish reads the channel's name, then every later frame on str, and
// queues each to every subscriber of the channel. It waits when a queue is
// full, until the frame fits or that subscriber leaves.
func (s *Server) publish(ctx context.Context, str *quic.Stream) error {
	r := bufio.NewReaderSize(str, ioBufferSize)
	name, err := readFrame(r, nil)
	if err != nil {
		return fmt.Errorf("read channel name: %w", err)
	}
	ch := s.hub.acquire(string(name))
	defer s.hub.release(string(name), ch)
	var buf []byte
	for {
		body, err := readFrame(r, buf)
		if err != nil {
			return err // io.EOF when the publisher is done
		}
		buf = body
		f := appendFrame(make([]byte, 0, len(body)+4), body)
		for _, sub := range *ch.subs.Load() {
			select {
			case sub.q <- f:
				continue
			default:
			}
			select {
			case sub.q <- f:
			case <-sub.done:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

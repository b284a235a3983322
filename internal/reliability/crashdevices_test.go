package reliability_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qim-im/qim/client"
	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// crashSender is one device that sends continuously, alternating between
// the receiver and the group, and retries each message with the same
// ClientMsgID until it is acknowledged.
type crashSender struct {
	// Static after construction.
	p          *qimdProc
	name       string
	token      string
	group      string
	background *sync.WaitGroup

	acks    atomic.Int64 // acknowledged so far
	lastErr atomic.Value // string: the latest failure, for diagnostics
	state   atomic.Value // string: what run is doing, for diagnostics

	// Owned by run; read after it returns.
	c          *client.Client
	sent       map[string]sentMsg
	ids        int
	attempts   int
	failures   int
	dupAcks    int
	reconnects int
	maxStall   time.Duration
	err        error
}

// maxRetryTime bounds how long a sender retries one message.
const maxRetryTime = 30 * time.Second

// run sends until stop is closed, then returns once its current message is
// acknowledged. It runs in its own goroutine.
func (s *crashSender) run(stop <-chan struct{}) {
	defer func() {
		if s.c != nil {
			s.c.Close()
		}
	}()
	lastAck := time.Now()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		cid := fmt.Sprintf("%s-%05d", s.name, i)
		to, conv := client.ToUser("rcv"), store.DirectConv(s.name, "rcv")
		if i%2 == 1 {
			to, conv = client.ToGroup(s.group), store.GroupConv(s.group)
		}
		s.ids++
		deadline := time.Now().Add(maxRetryTime)
		for attempt := 1; ; attempt++ {
			if time.Now().After(deadline) {
				s.err = fmt.Errorf("%s still not acknowledged after %d attempts in %v", cid, attempt, maxRetryTime)
				s.state.Store("gave up: " + s.err.Error())
				return
			}
			if s.c == nil {
				s.state.Store("dialling")
				c, err := s.p.dialOnce(s.name, s.token, "phone", false, time.Second)
				if err != nil {
					s.lastErr.Store("dial: " + err.Error())
					time.Sleep(50 * time.Millisecond)
					continue
				}
				s.c = c
				s.reconnects++
				s.background.Go(func() { drain(c) })
			}
			s.state.Store(fmt.Sprintf("sending %s, attempt %d", cid, attempt))
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			ack, err := s.c.Send(ctx, to, client.Outgoing{Text: cid, ClientMsgID: cid})
			cancel()
			s.attempts++
			if err == nil {
				if ack.GetDuplicate() {
					s.dupAcks++
					if attempt == 1 {
						s.err = fmt.Errorf("%s: first attempt answered as a duplicate: %v", cid, ack)
						return
					}
				}
				s.sent[cid] = sentMsg{conv: conv, id: ack.GetId(), seq: ack.GetSeq(), dup: ack.GetDuplicate()}
				s.acks.Add(1)
				s.maxStall = max(s.maxStall, time.Since(lastAck))
				lastAck = time.Now()
				break
			}
			s.failures++
			s.lastErr.Store("send: " + err.Error())
			var qe *client.Error
			if errors.As(err, &qe) && !retryable(qe.Code) {
				s.err = fmt.Errorf("%s: refused: %w", cid, err)
				return
			}
			old := s.c
			s.c = nil
			s.background.Go(func() { old.Close() })
		}
	}
}

// describe reports a sender's state, for a test that times out.
func (s *crashSender) describe() string {
	state, _ := s.state.Load().(string)
	last, _ := s.lastErr.Load().(string)
	return fmt.Sprintf("%s: %d acks, %s; last error: %s", s.name, s.acks.Load(), state, last)
}

// describeAll describes every sender, one a line.
func describeAll(ss []*crashSender) string {
	var b strings.Builder
	for _, s := range ss {
		b.WriteString(s.describe() + "\n")
	}
	return b.String()
}

// clientStacks returns the stacks of the goroutines that run client
// library code, for a test that times out.
func clientStacks() string {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var b strings.Builder
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "qim-im/qim/client.") || strings.Contains(g, "crashSender") {
			b.WriteString(g + "\n\n")
		}
	}
	return b.String()
}

// totalAcks returns how many messages the senders have had acknowledged.
func totalAcks(ss []*crashSender) int64 {
	var n int64
	for _, s := range ss {
		n += s.acks.Load()
	}
	return n
}

// retryable reports whether a send refused with code may be retried.
func retryable(code qimpb.Code) bool {
	switch code {
	case qimpb.Code_STORE_UNAVAILABLE, qimpb.Code_INTERNAL, qimpb.Code_GOING_AWAY,
		qimpb.Code_CLOSED, qimpb.Code_REPLACED, qimpb.Code_RATE_LIMITED:
		return true
	}
	return false
}

// drain reads c's messages until its session ends.
func drain(c *client.Client) {
	for range c.Messages() {
	}
}

// liveReceiver is a device of the receiver that stays online through the
// crashes, reconnecting each time, and checks the order of what it gets
// across its sessions.
type liveReceiver struct {
	p     *qimdProc
	token string

	mu          sync.Mutex
	highest     map[string]uint64 // by conversation; guarded by mu
	received    int               // guarded by mu
	redelivered int               // seq not above highest: a new session repeating; guarded by mu
	gaps        int               // seq above highest+1; guarded by mu
	sessions    int               // guarded by mu
}

// run receives until stop is closed. It runs in its own goroutine.
func (l *liveReceiver) run(stop <-chan struct{}) {
	for {
		var c *client.Client
		for c == nil {
			select {
			case <-stop:
				return
			default:
			}
			var err error
			if c, err = l.p.dialOnce("rcv", l.token, "live", false, time.Second); err != nil {
				c = nil
				time.Sleep(50 * time.Millisecond)
			}
		}
		l.mu.Lock()
		l.sessions++
		l.mu.Unlock()
	session:
		for {
			select {
			case m, ok := <-c.Messages():
				if !ok {
					break session
				}
				l.record(m)
			case <-stop:
				c.Close()
				return
			}
		}
		c.Close()
	}
}

func (l *liveReceiver) record(m *qimpb.Message) {
	l.mu.Lock()
	defer l.mu.Unlock()
	conv := convKey(m)
	l.received++
	switch h := l.highest[conv]; {
	case m.GetSeq() <= h:
		l.redelivered++
		return
	case m.GetSeq() > h+1:
		l.gaps++
	}
	l.highest[conv] = m.GetSeq()
}

func (l *liveReceiver) caughtUp(want map[string]int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for conv, n := range want {
		if l.highest[conv] < uint64(n) {
			return false
		}
	}
	return true
}

func (l *liveReceiver) progress(want map[string]int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for conv, n := range want {
		fmt.Fprintf(&b, "%s %d/%d ", conv, l.highest[conv], n)
	}
	return b.String()
}

// readHistory pages backwards through a group's history, 500 at a time,
// and returns it oldest first.
func readHistory(t testing.TB, c *client.Client, group string) []*qimpb.Message {
	t.Helper()
	var all []*qimpb.Message
	before := uint64(0)
	for {
		page, err := c.History(ctxT(t), group, before, 500)
		if err != nil {
			t.Fatalf("History(%s, before %d): %v", group, before, err)
		}
		if len(page) == 0 {
			break
		}
		all = append(slices.Clone(page), all...)
		before = page[0].GetSeq()
		if before <= 1 {
			break
		}
	}
	return all
}

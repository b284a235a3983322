package core

import (
	"context"
	"fmt"
	"time"

	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// Pending is one message submitted to the committer (Submit). Done is
// closed once it is stored, found to be a duplicate, or failed; Result
// then tells which.
type Pending struct {
	// Static after Submit.
	app     string
	conv    string
	members []string // users whose inbox gets the conversation (1:1)
	msg     *qimpb.Message
	read    time.Time // when it was read off the sender's stream (metrics.Now)

	// Written by the committer before it closes done.
	cost int64 // MsgCost of the stored message; 0 for a duplicate or a failure
	res  store.AppendResult
	err  error
	done chan struct{}
}

// Done returns a channel closed when the message's commit is over.
func (p *Pending) Done() <-chan struct{} { return p.done }

// Result returns the stored message (or, for a duplicate, the original)
// or the error, which CodeOf maps to a code. Call it only after Done is
// closed.
func (p *Pending) Result() (store.AppendResult, error) { return p.res, p.err }

// Submit queues m, a message of conversation conv of app validated by
// CheckMessage, for a durable commit, and returns at once; the committer
// stores it with others in one store call, and routes it to its
// conversation's users in sequence order. m must have FromUser and
// FromDevice set and no Id, Seq or Timestamp. read is when it was read off
// its sender's stream (metrics.Now). Submit blocks while the committer's
// queue is full, which slows the submitting stream only.
func (h *Hub) Submit(ctx context.Context, app, conv string, m *qimpb.Message, read time.Time) (*Pending, error) {
	p := &Pending{app: app, conv: conv, msg: m, read: read, done: make(chan struct{})}
	if m.ToUser != "" {
		p.members = []string{m.FromUser, m.ToUser}
	}
	select {
	case <-h.stop:
		return nil, StoreError("append", store.ErrClosed)
	default:
	}
	select {
	case h.commits <- p:
		h.metrics.MessageIn(true)
		select {
		case <-h.stop:
			// Close raced with the send: the committer may have failed
			// the queue before p was in it. Once it has stopped, fail
			// what is left, p included, so that nobody waits for ever.
			h.wg.Wait()
			h.failQueued()
		default:
		}
		return p, nil
	case <-h.stop:
		return nil, StoreError("append", store.ErrClosed)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// commitLoop takes queued messages in batches, stores each batch with one
// durable commit (with an outbox job per message when Config.PushDelay is
// set), then completes them and routes the new ones, in commit order. It
// is the only goroutine that appends messages, so routing order is
// sequence order and the recent cache is always a suffix of the store. It
// runs in its own goroutine, in h.wg, until Close.
func (h *Hub) commitLoop() {
	batch := make([]*Pending, 0, h.maxBatch)
	appends := make([]store.Append, 0, h.maxBatch)
	for {
		batch = batch[:0]
		select {
		case p := <-h.commits:
			batch = append(batch, p)
		case <-h.stop:
			h.failQueued()
			return
		}
	fill:
		for len(batch) < h.maxBatch {
			select {
			case p := <-h.commits:
				batch = append(batch, p)
			default:
				break fill
			}
		}
		appends = appends[:0]
		var pushAt time.Time // zero: no outbox jobs
		if h.pushDelay > 0 {
			pushAt = h.now().Add(h.pushDelay)
		}
		for _, p := range batch {
			appends = append(appends, store.Append{App: p.app, Conv: p.conv, Members: p.members, Msg: p.msg, PushAt: pushAt})
		}
		start := h.metrics.Now()
		results, err := h.store.Append(context.Background(), appends)
		h.metrics.StoreCommit(start, len(appends), err)
		if err == nil && len(results) != len(batch) {
			err = fmt.Errorf("store returned %d results for %d messages", len(results), len(batch))
		}
		if err == nil {
			// Into the recent cache before any sender hears of its
			// message: a GROUP_HISTORY right after the ack must see it.
			for i, p := range batch {
				if m := results[i].Msg; !results[i].Duplicate && m.ToGroup != "" {
					p.cost = MsgCost(m)
					h.recent.add(p.app, p.conv, m, p.cost)
				}
			}
		}
		for i, p := range batch {
			switch {
			case err != nil:
				p.err = StoreError("append", err)
			case results[i].Duplicate && ConvOf(results[i].Msg) != p.conv:
				// The id was used for a message of another conversation:
				// this is not a retry of it.
				p.err = Errorf(qimpb.Code_INVALID_ARGUMENT, "client_msg_id already used for another conversation")
			default:
				p.res = results[i]
			}
			close(p.done)
		}
		if err != nil {
			h.logger.Error("append failed; senders told STORE_UNAVAILABLE", "messages", len(batch), "err", err)
			continue
		}
		for i, p := range batch {
			if results[i].Duplicate {
				continue
			}
			h.route(context.Background(), p.app, p.conv, results[i].Msg, p.read, p.cost)
		}
	}
}

// failQueued fails every message still queued at shutdown.
func (h *Hub) failQueued() {
	for {
		select {
		case p := <-h.commits:
			p.err = StoreError("append", store.ErrClosed)
			close(p.done)
		default:
			return
		}
	}
}

package pebblestore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// Append implements store.Store. It sets Id, Seq and Timestamp of the given
// messages that are not duplicates, and restores them if it fails. In the
// same batch it moves each sender's read cursor of the conversation to its
// last new message (the "ro" key, see keys.go); messages of every sender
// count, store.Store's reserved users included.
//
// Ids are max(previous+1, now in Unix milliseconds << 16); the highest is
// stored with every call and, on Open, the next id starts above both it and
// the clock, so ids increase across restarts.
func (s *Store) Append(ctx context.Context, msgs []store.Append) ([]store.AppendResult, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.exit()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(msgs) == 0 {
		return nil, nil
	}
	for _, a := range msgs {
		if err := checkAppend(a); err != nil {
			return nil, fmt.Errorf("append: %w", err)
		}
	}

	s.appendMu.Lock()
	op, err := s.prepareAppend(msgs)
	// Released after the seqs are published, or on failure.
	defer op.release()
	if err != nil {
		s.appendMu.Unlock()
		op.undo()
		op.batch.Close()
		return nil, fmt.Errorf("append: %w", err)
	}
	if err := s.apply(op.batch, true); err != nil {
		s.appendMu.Unlock()
		op.undo()
		return nil, fmt.Errorf("append: %w", err)
	}
	for _, p := range op.convs {
		p.c.last = p.last
	}
	s.lastID = op.lastID
	s.appendMu.Unlock()
	if op.jobs > 0 {
		// After the apply: see claimBatch.
		s.lowerPushFloor(op.pushFloor)
		s.pushJobs.Add(op.jobs)
	}

	// Other Appends may now write their batches to the log behind this one
	// and share its sync.
	if err := s.wait(op.batch, true); err != nil {
		op.undo()
		return nil, fmt.Errorf("append: %w", err)
	}
	// The log is synced in order, so every batch written before this one is
	// synced too, including those holding the originals of duplicates.
	for _, p := range op.convs {
		p.c.publish(p.last)
	}
	return op.results, nil
}

func checkAppend(a store.Append) error {
	if a.Msg == nil {
		return errors.New("pebblestore: nil message")
	}
	if err := checkIDs(a.App, a.Conv, a.Msg.FromUser); err != nil {
		return err
	}
	return checkIDs(a.Members...)
}

// appendOp is an Append prepared under appendMu.
type appendOp struct {
	batch   *pebble.Batch
	results []store.AppendResult
	convs   map[string]*pendingConv // by app 0x00 conv
	lastID  uint64
	saved   []savedMsg
	// jobs counts the outbox jobs added (Append.PushAt), pushFloor is the
	// lowest Next among them.
	jobs      int64
	pushFloor uint64
}

// pendingConv is a conversation whose seqs an appendOp allocates.
type pendingConv struct {
	c         *convSeq
	app, conv string
	last      uint64
	// senders holds each sender's last new message in the conversation,
	// whose seq becomes the sender's "ro" value (see keys.go). A call
	// rarely has more than a few senders per conversation, so a slice.
	senders []sent
}

// sent is a sender's last message in a pendingConv.
type sent struct {
	user string
	seq  uint64
}

// sent records that user sent the conversation's message seq, the latest
// of the call so far.
func (p *pendingConv) sent(user string, seq uint64) {
	for i := range p.senders {
		if p.senders[i].user == user {
			p.senders[i].seq = seq
			return
		}
	}
	p.senders = append(p.senders, sent{user, seq})
}

// savedMsg holds the fields Append sets, to restore them on failure.
type savedMsg struct {
	m         *qimpb.Message
	id, seq   uint64
	timestamp int64
}

// release unpins the conversations of op.
func (op *appendOp) release() {
	for _, p := range op.convs {
		p.c.unpin()
	}
}

func (op *appendOp) undo() {
	for _, sv := range op.saved {
		sv.m.Id, sv.m.Seq, sv.m.Timestamp = sv.id, sv.seq, sv.timestamp
	}
}

type dedupID struct{ app, user, clientMsgID string }

// prepareAppend allocates ids and seqs and builds the batch of an Append.
// The caller holds appendMu. It changes no cached seq: the caller installs
// op.convs and op.lastID once the batch is written. The conversations in
// op.convs are pinned, even when it fails; see appendOp.release.
func (s *Store) prepareAppend(msgs []store.Append) (*appendOp, error) {
	now := time.Now().UnixMilli()
	op := &appendOp{
		batch:   s.db.NewBatch(),
		results: make([]store.AppendResult, len(msgs)),
		convs:   make(map[string]*pendingConv),
		lastID:  s.lastID,
	}
	seen := make(map[dedupID]int)  // first index of each client msg id
	inbox := make(map[string]bool) // inbox keys written
	for i, a := range msgs {
		m := a.Msg
		if m.ClientMsgId != "" {
			d := dedupID{a.App, m.FromUser, m.ClientMsgId}
			if j, ok := seen[d]; ok {
				orig := proto.CloneOf(op.results[j].Msg)
				op.results[i] = store.AppendResult{Msg: orig, Duplicate: true}
				continue
			}
			seen[d] = i
			orig, err := s.original(a.App, m.FromUser, m.ClientMsgId)
			if err != nil {
				return op, err
			}
			if orig != nil {
				op.results[i] = store.AppendResult{Msg: orig, Duplicate: true}
				continue
			}
		}

		pk := a.App + "\x00" + a.Conv
		p := op.convs[pk]
		if p == nil {
			c, err := s.appendConv(a.App, a.Conv)
			if err != nil {
				return op, err
			}
			p = &pendingConv{c: c, app: a.App, conv: a.Conv, last: c.last}
			op.convs[pk] = p
		}
		p.last++
		op.lastID = max(op.lastID+1, uint64(now)<<16)
		op.saved = append(op.saved, savedMsg{m, m.Id, m.Seq, m.Timestamp})
		m.Id, m.Seq, m.Timestamp = op.lastID, p.last, now

		v, err := proto.Marshal(m)
		if err != nil {
			return op, fmt.Errorf("marshal message: %w", err)
		}
		op.batch.Set(msgKey(a.App, a.Conv, p.last), v, nil)
		if m.ClientMsgId != "" {
			op.batch.Set(dedupKey(a.App, m.FromUser, m.ClientMsgId), encodeDedup(a.Conv, p.last), nil)
			op.batch.Set(dedupTimeKey(now, a.App, m.FromUser, m.ClientMsgId), nil, nil)
		}
		if !a.PushAt.IsZero() {
			next := pushMillis(a.PushAt)
			op.batch.Set(pushJobKey(m.Id), encodeJob(jobRecord{app: a.App, conv: a.Conv, seq: m.Seq, next: next}), nil)
			op.batch.Set(pushDueKey(next, m.Id), nil, nil)
			if op.jobs == 0 || next < op.pushFloor {
				op.pushFloor = next
			}
			op.jobs++
		}
		// Inbox entries are never deleted, and a 1:1 conversation's
		// members never change: its first message writes them, and the
		// rest need not write them again (two of the five keys a message
		// would otherwise cost).
		if p.last == 1 {
			for _, u := range a.Members {
				k := inboxKey(a.App, u, a.Conv)
				if !inbox[string(k)] {
					inbox[string(k)] = true
					op.batch.Set(k, nil, nil)
				}
			}
		}
		p.sent(m.FromUser, p.last)
		op.results[i] = store.AppendResult{Msg: m}
	}
	for _, p := range op.convs {
		op.batch.Set(convKey(p.app, p.conv), encodeU64(p.last), nil)
		// The sender has read its own message: its read cursor moves,
		// not its shared one (see keys.go for why a key of its own).
		for _, o := range p.senders {
			op.batch.Set(ownReadKey(p.app, o.user, p.conv), encodeU64(o.seq), nil)
		}
	}
	// Written by every call, so that a call whose messages are all
	// duplicates still commits, and returns only once the originals, which
	// may belong to an Append still waiting for its sync, are synced.
	op.batch.Set(metaLastIDKey, encodeU64(op.lastID), nil)
	return op, nil
}

// original returns the message stored under (app, user, clientMsgID), or
// nil. It may be one whose batch is not synced yet; see prepareAppend.
func (s *Store) original(app, user, clientMsgID string) (*qimpb.Message, error) {
	v, err := s.get(dedupKey(app, user, clientMsgID))
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	conv, seq, err := decodeDedup(v)
	if err != nil {
		return nil, err
	}
	v, err = s.get(msgKey(app, conv, seq))
	if err != nil {
		return nil, fmt.Errorf("pebblestore: dedup entry without message: %w", err)
	}
	m := new(qimpb.Message)
	if err := proto.Unmarshal(v, m); err != nil {
		return nil, fmt.Errorf("pebblestore: unmarshal message: %w", err)
	}
	return m, nil
}

// Messages implements store.Store. A limit <= 0 returns no messages.
func (s *Store) Messages(ctx context.Context, app, conv string, after uint64, limit int) ([]*qimpb.Message, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.exit()
	if err := checkIDs(app, conv); err != nil {
		return nil, err
	}
	last, err := s.lastSeq(app, conv)
	if err != nil || limit <= 0 || after >= last {
		return nil, err
	}
	hi := last
	if uint64(limit) < last-after {
		hi = after + uint64(limit)
	}
	return s.messages(app, conv, after+1, hi)
}

// History implements store.Store. A limit <= 0 returns no messages.
func (s *Store) History(ctx context.Context, app, conv string, before uint64, limit int) ([]*qimpb.Message, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.exit()
	if err := checkIDs(app, conv); err != nil {
		return nil, err
	}
	last, err := s.lastSeq(app, conv)
	if err != nil || limit <= 0 {
		return nil, err
	}
	hi := last
	if before != 0 && before-1 < hi {
		hi = before - 1
	}
	if hi == 0 {
		return nil, nil
	}
	lo := uint64(1)
	if uint64(limit) < hi {
		lo = hi - uint64(limit) + 1
	}
	return s.messages(app, conv, lo, hi)
}

// LastSeq implements store.Store.
func (s *Store) LastSeq(ctx context.Context, app, conv string) (uint64, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.exit()
	if err := checkIDs(app, conv); err != nil {
		return 0, err
	}
	return s.lastSeq(app, conv)
}

// messages returns the messages of a conversation with lo <= seq <= hi.
// Seqs are dense, so that is hi-lo+1 messages.
func (s *Store) messages(app, conv string, lo, hi uint64) ([]*qimpb.Message, error) {
	out := make([]*qimpb.Message, 0, hi-lo+1)
	p := msgPrefix(app, conv)
	err := s.scanRange(p.u64(lo), msgKey(app, conv, hi+1), len(p), func(_, v []byte) error {
		m := new(qimpb.Message)
		if err := proto.Unmarshal(v, m); err != nil {
			return fmt.Errorf("pebblestore: unmarshal message: %w", err)
		}
		out = append(out, m)
		return nil
	})
	return out, err
}

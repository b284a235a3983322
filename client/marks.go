package client

import (
	"sync"

	qimpb "github.com/qim-im/qim/proto"
)

// marks is what a Client has seen of receipts and presence, so that the
// events it delivers never go backwards (PROTOCOL.md 11.3, 11.6): events
// may arrive in any order, and after a server crash a delivered cursor may
// be learnt again lower than it was. It holds one entry per user and
// conversation that has receipts (two per 1:1 conversation, one per group)
// and one per contact who shows presence. Its zero value is ready to use;
// its methods are safe for concurrent use.
type marks struct {
	mu       sync.Mutex
	receipts map[receiptKey]receiptMarks // guarded by mu
	seen     map[string]presenceMark     // guarded by mu; by user
}

// receiptKey names the receipts of one user in one conversation, as the
// client addresses it.
type receiptKey struct {
	conv Peer
	user string
}

// receiptMarks are the highest cursors seen for a receiptKey.
type receiptMarks struct {
	delivered, read, readPrivate uint64
}

// presenceMark is the last presence seen of a user.
type presenceMark struct {
	state           qimpb.PresenceState
	lastSeen, since int64
}

// receipt records r and returns the Receipt to deliver, carrying the
// highest cursors seen, or nil when r moves none of them.
func (m *marks) receipt(r *qimpb.Receipt) *qimpb.Receipt {
	conv := Peer{User: r.GetToUser(), Group: r.GetToGroup()}
	if conv.validate() != nil {
		return nil
	}
	key := receiptKey{conv, r.GetUser()}
	m.mu.Lock()
	defer m.mu.Unlock()
	got, moved := m.mergeLocked(key, receiptMarks{r.GetDelivered(), r.GetRead(), r.GetReadPrivate()})
	if !moved {
		return nil
	}
	return got.receipt(key)
}

// inbox records the receipts in an inbox of user me (Connected.inbox or
// INBOX) and returns, as Receipts, those that moved.
func (m *marks) inbox(me string, convs []*qimpb.ConversationState) []*qimpb.Receipt {
	m.mu.Lock()
	defer m.mu.Unlock()
	var moved []*qimpb.Receipt
	learn := func(key receiptKey, rm receiptMarks) {
		if got, ok := m.mergeLocked(key, rm); ok {
			moved = append(moved, got.receipt(key))
		}
	}
	for _, cs := range convs {
		conv := Peer{User: cs.GetToUser(), Group: cs.GetToGroup()}
		if conv.validate() != nil {
			continue
		}
		if conv.User != "" && conv.User != me {
			learn(receiptKey{conv, conv.User}, receiptMarks{delivered: cs.GetPeerDelivered(), read: cs.GetPeerRead()})
			learn(receiptKey{conv, me}, receiptMarks{readPrivate: cs.GetReadSeq()})
			continue
		}
		// A group, or the conversation with oneself: one entry.
		rm := receiptMarks{readPrivate: cs.GetReadSeq()}
		if conv.User != "" {
			rm.delivered, rm.read = cs.GetPeerDelivered(), cs.GetPeerRead()
		}
		learn(receiptKey{conv, me}, rm)
	}
	return moved
}

// read records that user me's read cursor of conv is at least seq.
func (m *marks) read(conv Peer, me string, seq uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mergeLocked(receiptKey{conv, me}, receiptMarks{readPrivate: seq})
}

// mergeLocked raises the marks of key to rm and returns them, and whether
// any moved. m.mu must be held.
func (m *marks) mergeLocked(key receiptKey, rm receiptMarks) (receiptMarks, bool) {
	if m.receipts == nil {
		m.receipts = make(map[receiptKey]receiptMarks)
	}
	old := m.receipts[key]
	got := receiptMarks{max(old.delivered, rm.delivered), max(old.read, rm.read), max(old.readPrivate, rm.readPrivate)}
	if got == old {
		return old, false
	}
	m.receipts[key] = got
	return got, true
}

func (rm receiptMarks) receipt(key receiptKey) *qimpb.Receipt {
	return &qimpb.Receipt{User: key.user, ToUser: key.conv.User, ToGroup: key.conv.Group,
		Delivered: rm.delivered, Read: rm.read, ReadPrivate: rm.readPrivate}
}

// presence records p and reports whether it is news: not older (by
// since) than the last presence seen of its user, nor the same again.
func (m *marks) presence(p *qimpb.Presence) bool {
	pm := presenceMark{p.GetState(), p.GetLastSeen(), p.GetSince()}
	m.mu.Lock()
	defer m.mu.Unlock()
	old, ok := m.seen[p.GetUser()]
	if ok && (pm.since < old.since || pm == old) {
		return false
	}
	if m.seen == nil {
		m.seen = make(map[string]presenceMark)
	}
	m.seen[p.GetUser()] = pm
	return true
}

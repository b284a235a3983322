package reliability_test

import (
	"fmt"
	"testing"

	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// convKey is the server's name of the conversation of m: "u:A:B" or "g:ID".
func convKey(m *qimpb.Message) string {
	if m.GetToGroup() != "" {
		return store.GroupConv(m.GetToGroup())
	}
	return store.DirectConv(m.GetFromUser(), m.GetToUser())
}

// sentMsg is what a sender learnt of one of its messages.
type sentMsg struct {
	conv string // convKey
	id   uint64
	seq  uint64
	dup  bool // the last answer had Duplicate set
}

// audit is what checkConv found in one conversation.
type audit struct {
	received   int // messages received, duplicates included
	gaps       int // messages whose seq was not the previous one + 1
	dupPushes  int // a seq received again
	dupStored  int // a client_msg_id stored under two seqs
	mismatched int // stored under another id or seq than its acknowledgement said
	unacked    int // stored but never acknowledged to its sender
	lost       int // acknowledged but not received
}

func (a *audit) add(b audit) {
	a.received += b.received
	a.gaps += b.gaps
	a.dupPushes += b.dupPushes
	a.dupStored += b.dupStored
	a.mismatched += b.mismatched
	a.unacked += b.unacked
	a.lost += b.lost
}

func (a audit) clean() bool {
	return a.gaps == 0 && a.dupPushes == 0 && a.dupStored == 0 && a.mismatched == 0 && a.lost == 0
}

func (a audit) String() string {
	return fmt.Sprintf("received %d, gaps %d, pushed twice %d, stored twice %d, ack mismatch %d, stored unacked %d, lost %d",
		a.received, a.gaps, a.dupPushes, a.dupStored, a.mismatched, a.unacked, a.lost)
}

// checkConv checks the messages one device received for conv, in arrival
// order, against what the senders were told: seqs 1, 2, 3... each once, every
// acknowledged message there with the acknowledged id and seq, and no
// client_msg_id twice. It reports the first few problems with t.Errorf.
func checkConv(t testing.TB, label, conv string, got []*qimpb.Message, sent map[string]sentMsg) audit {
	t.Helper()
	return checkConvExcept(t, label, conv, got, sent, nil)
}

// checkConvExcept is checkConv for a device that sent the messages whose
// seqs are in own: the server does not push those to it.
func checkConvExcept(t testing.TB, label, conv string, got []*qimpb.Message, sent map[string]sentMsg, own map[uint64]bool) audit {
	t.Helper()
	var a audit
	reported := 0
	report := func(format string, args ...any) {
		t.Helper()
		if reported < 5 {
			t.Errorf("%s %s: "+format, append([]any{label, conv}, args...)...)
		}
		reported++
	}
	a.received = len(got)
	seen := make(map[string]uint64)
	var last uint64
	for _, m := range got {
		next := last + 1
		for own[next] {
			next++
		}
		switch {
		case m.GetSeq() <= last:
			a.dupPushes++
			report("seq %d received again after %d", m.GetSeq(), last)
			continue
		case own[m.GetSeq()]:
			a.dupPushes++
			report("seq %d pushed to the device that sent it", m.GetSeq())
		case m.GetSeq() != next:
			a.gaps++
			report("seq %d follows %d", m.GetSeq(), last)
		}
		last = m.GetSeq()
		cid := m.GetClientMsgId()
		if prev, ok := seen[cid]; ok {
			a.dupStored++
			report("client_msg_id %q stored as seq %d and %d", cid, prev, m.GetSeq())
		}
		seen[cid] = m.GetSeq()
		s, ok := sent[cid]
		switch {
		case !ok:
			a.unacked++
		case s.conv != conv || s.id != m.GetId() || s.seq != m.GetSeq():
			a.mismatched++
			report("client_msg_id %q stored as id %d seq %d, acknowledged as %s id %d seq %d", cid, m.GetId(), m.GetSeq(), s.conv, s.id, s.seq)
		}
	}
	for cid, s := range sent {
		if s.conv != conv || own[s.seq] {
			continue
		}
		if _, ok := seen[cid]; !ok {
			a.lost++
			report("acknowledged %q (seq %d) never received", cid, s.seq)
		}
	}
	if reported > 5 {
		t.Errorf("%s %s: %d more problems", label, conv, reported-5)
	}
	return a
}

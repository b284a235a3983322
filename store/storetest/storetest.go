// Package storetest is the conformance suite of store.Store: every backend
// runs Run (and, if it persists across restarts, RunReopen) from its tests.
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store {
//			s, err := mybackend.Open(t.TempDir())
//			if err != nil {
//				t.Fatal(err)
//			}
//			return s
//		})
//	}
package storetest

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// Run runs the conformance suite as subtests of t. open must return a new,
// empty store each time it is called; Run closes it when the subtest ends.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	for _, tt := range []struct {
		name string
		test func(t *testing.T, s store.Store)
	}{
		{"AppendSeqs", testAppendSeqs},
		{"DedupAcrossCalls", testDedupAcrossCalls},
		{"DedupWithinCall", testDedupWithinCall},
		{"DedupScope", testDedupScope},
		{"Messages", testMessages},
		{"History", testHistory},
		{"InboxDirect", testInboxDirect},
		{"InboxGroup", testInboxGroup},
		{"Contacts", testContacts},
		{"Groups", testGroups},
		{"GroupMembership", testGroupMembership},
		{"GroupLimit", testGroupLimit},
		{"GroupOwnerHandOff", testGroupOwnerHandOff},
		{"GroupClosed", testGroupClosed},
		{"GroupNotFound", testGroupNotFound},
		{"GroupConcurrentJoins", testGroupConcurrentJoins},
		{"GroupKickRaces", testGroupKickRaces},
		{"GroupConcurrentLeaves", testGroupConcurrentLeaves},
		{"TenantIsolation", testTenantIsolation},
		{"KeyPrefixes", testKeyPrefixes},
		{"InvalidIDs", testInvalidIDs},
		{"Closed", testClosed},
		{"ConcurrentAppend", testConcurrentAppend},
		{"NextEpoch", testNextEpoch},
		{"PruneDedup", testPruneDedup},
		{"PushAppend", testPushAppend},
		{"ClaimPush", testClaimPush},
		{"RetryFinishPush", testRetryFinishPush},
		{"PushConcurrentClaim", testPushConcurrentClaim},
		{"DeliveredTo", testDeliveredTo},
		{"SetRead", testSetRead},
		{"AppendRead", testAppendRead},
		{"Receipts", testReceipts},
		{"InboxReceipts", testInboxReceipts},
		{"Prefs", testPrefs},
		{"ContactOf", testContactOf},
		{"ReceiptsIsolation", testReceiptsIsolation},
		{"ReadConcurrent", testReadConcurrent},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() { closeStore(t, s) })
			tt.test(t, s)
		})
	}
}

func closeStore(t *testing.T, s store.Store) {
	t.Helper()
	if err := s.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
		t.Errorf("Close: %v", err)
	}
}

// Test data.

const (
	appA = "org/app"
	appB = "org/app2" // its key starts with appA's
)

// direct returns an Append of a 1:1 message from one user to another.
func direct(app, from, to, clientMsgID, text string) store.Append {
	return store.Append{
		App:     app,
		Conv:    store.DirectConv(from, to),
		Members: []string{from, to},
		Msg: &qimpb.Message{
			Type:        qimpb.MessageType_TXT,
			Payload:     txt(text),
			ToUser:      to,
			FromUser:    from,
			FromDevice:  "phone",
			ClientMsgId: clientMsgID,
		},
	}
}

// group returns an Append of a message to a group.
func group(app, from, id, clientMsgID, text string) store.Append {
	return store.Append{
		App:  app,
		Conv: store.GroupConv(id),
		Msg: &qimpb.Message{
			Type:        qimpb.MessageType_TXT,
			Payload:     txt(text),
			ToGroup:     id,
			FromUser:    from,
			FromDevice:  "phone",
			ClientMsgId: clientMsgID,
		},
	}
}

func txt(s string) []byte {
	b, err := proto.Marshal(&qimpb.MessageTxt{Txt: s})
	if err != nil {
		panic(err)
	}
	return b
}

func text(t *testing.T, m *qimpb.Message) string {
	t.Helper()
	var x qimpb.MessageTxt
	if err := proto.Unmarshal(m.Payload, &x); err != nil {
		t.Fatalf("payload of message seq %d: %v", m.Seq, err)
	}
	return x.Txt
}

// Helpers.

func mustAppend(t *testing.T, s store.Store, msgs ...store.Append) []store.AppendResult {
	t.Helper()
	res, err := s.Append(t.Context(), msgs)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	if len(res) != len(msgs) {
		t.Fatalf("Append: %d results for %d messages", len(res), len(msgs))
	}
	for i, r := range res {
		if r.Msg == nil {
			t.Fatalf("Append: result %d has no message", i)
		}
	}
	return res
}

func mustMessages(t *testing.T, s store.Store, app, conv string, after uint64, limit int) []*qimpb.Message {
	t.Helper()
	msgs, err := s.Messages(t.Context(), app, conv, after, limit)
	if err != nil {
		t.Fatalf("Messages(%s, %s, %d, %d): %v", app, conv, after, limit, err)
	}
	return msgs
}

func mustHistory(t *testing.T, s store.Store, app, conv string, before uint64, limit int) []*qimpb.Message {
	t.Helper()
	msgs, err := s.History(t.Context(), app, conv, before, limit)
	if err != nil {
		t.Fatalf("History(%s, %s, %d, %d): %v", app, conv, before, limit, err)
	}
	return msgs
}

func mustLastSeq(t *testing.T, s store.Store, app, conv string) uint64 {
	t.Helper()
	seq, err := s.LastSeq(t.Context(), app, conv)
	if err != nil {
		t.Fatalf("LastSeq(%s, %s): %v", app, conv, err)
	}
	return seq
}

func mustInbox(t *testing.T, s store.Store, app, user, device string) []store.ConvState {
	t.Helper()
	inbox, err := s.Inbox(t.Context(), app, user, device)
	if err != nil {
		t.Fatalf("Inbox(%s, %s, %s): %v", app, user, device, err)
	}
	return inbox
}

// inboxConv returns the state of conv in user's inbox on device, failing the
// test if it is missing.
func inboxConv(t *testing.T, s store.Store, app, user, device, conv string) store.ConvState {
	t.Helper()
	for _, c := range mustInbox(t, s, app, user, device) {
		if c.Conv == conv {
			return c
		}
	}
	t.Fatalf("Inbox(%s, %s, %s): no %s", app, user, device, conv)
	return store.ConvState{}
}

func inInbox(t *testing.T, s store.Store, app, user, device, conv string) bool {
	t.Helper()
	for _, c := range mustInbox(t, s, app, user, device) {
		if c.Conv == conv {
			return true
		}
	}
	return false
}

func mustSetAcked(t *testing.T, s store.Store, app, user, device, conv string, seq uint64) {
	t.Helper()
	if err := s.SetAcked(t.Context(), app, user, device, conv, seq); err != nil {
		t.Fatalf("SetAcked: %v", err)
	}
}

func mustCreateGroup(t *testing.T, s store.Store, app, id, owner string) store.Group {
	t.Helper()
	g := store.Group{ID: id, Name: "name of " + id, Owner: owner, Created: time.Now().UnixMilli()}
	if err := s.CreateGroup(t.Context(), app, g); err != nil {
		t.Fatalf("CreateGroup(%s, %s): %v", app, id, err)
	}
	return g
}

// mustJoin makes user join a group, with no size limit.
func mustJoin(t *testing.T, s store.Store, app, id, user string) {
	t.Helper()
	if _, err := s.JoinGroup(t.Context(), app, id, user, 0); err != nil {
		t.Fatalf("JoinGroup(%s, %s, %s): %v", app, id, user, err)
	}
}

func mustGetGroup(t *testing.T, s store.Store, app, id string) store.Group {
	t.Helper()
	g, err := s.GetGroup(t.Context(), app, id)
	if err != nil {
		t.Fatalf("GetGroup(%s, %s): %v", app, id, err)
	}
	return g
}

func mustMembers(t *testing.T, s store.Store, app, id string) []string {
	t.Helper()
	m, err := s.Members(t.Context(), app, id)
	if err != nil {
		t.Fatalf("Members(%s, %s): %v", app, id, err)
	}
	return m
}

func mustUserGroups(t *testing.T, s store.Store, app, user string) []store.Group {
	t.Helper()
	gs, err := s.UserGroups(t.Context(), app, user)
	if err != nil {
		t.Fatalf("UserGroups(%s, %s): %v", app, user, err)
	}
	return gs
}

func mustContacts(t *testing.T, s store.Store, app, user string) []string {
	t.Helper()
	c, err := s.Contacts(t.Context(), app, user)
	if err != nil {
		t.Fatalf("Contacts(%s, %s): %v", app, user, err)
	}
	return c
}

func seqs(msgs []*qimpb.Message) []uint64 {
	out := make([]uint64, len(msgs))
	for i, m := range msgs {
		out[i] = m.Seq
	}
	return out
}

// span returns [lo, lo+1, ..., hi], empty if hi < lo.
func span(lo, hi uint64) []uint64 {
	out := []uint64{}
	for s := lo; s <= hi; s++ {
		out = append(out, s)
	}
	return out
}

func checkSeqs(t *testing.T, what string, msgs []*qimpb.Message, want []uint64) {
	t.Helper()
	got := seqs(msgs)
	if slices.Equal(got, want) {
		return
	}
	if len(got) > 20 || len(want) > 20 {
		t.Errorf("%s: %d seqs %s, want %d seqs %s", what, len(got), ends(got), len(want), ends(want))
		return
	}
	t.Errorf("%s: seqs %v, want %v", what, got, want)
}

// ends summarizes a long list of seqs by its ends.
func ends(s []uint64) string {
	if len(s) == 0 {
		return "[]"
	}
	return fmt.Sprintf("[%d ... %d]", s[0], s[len(s)-1])
}

func groupIDs(gs []store.Group) []string {
	out := []string{}
	for _, g := range gs {
		out = append(out, g.ID)
	}
	return out
}

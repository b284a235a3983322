package core

import (
	"context"
	"fmt"
	"testing"
	"time"

	qimpb "github.com/qim-im/qim/proto"
)

// notes returns the soft events received, in order.
func (r *recorder) notes() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Event
	for _, ev := range r.events {
		if ev.Note != nil {
			out = append(out, ev)
		}
	}
	return out
}

func TestTypingRoutesAndLimits(t *testing.T) {
	h := newHub(t, Config{TypingRate: 1, TypingBurst: 2})
	ctx := context.Background()
	alice, bob := listen(t, h, "a", "alice"), listen(t, h, "a", "bob")
	for i := range 2 {
		if err := h.Typing(ctx, "a", "alice", "phone", &qimpb.Typing{ToUser: "bob", Active: i == 0}); err != nil {
			t.Fatal(err)
		}
	}
	wantCode(t, "third typing within the burst", h.Typing(ctx, "a", "alice", "phone", &qimpb.Typing{ToUser: "bob", Active: true}), qimpb.Code_RATE_LIMITED)
	ns := bob.notes()
	if len(ns) != 2 {
		t.Fatalf("bob got %d typing events, want 2", len(ns))
	}
	ty := ns[0].Note.Typing
	if ty.FromUser != "alice" || ty.ToUser != "alice" || !ty.Active || ty.TtlMs != 6000 || ns[0].NoteDevice != "phone" {
		t.Fatalf("bob's typing event: %v from %q", ty, ns[0].NoteDevice)
	}
	if ns[1].Note.Typing.Active {
		t.Fatal("second event should say alice stopped")
	}
	if n := len(alice.notes()); n != 0 {
		t.Fatalf("the typist got %d of its own events", n)
	}
	// Another conversation has its own bucket.
	if err := h.Typing(ctx, "a", "alice", "phone", &qimpb.Typing{ToUser: "carol", Active: true}); err != nil {
		t.Fatal(err)
	}
	// Groups: members only, never the typist.
	g := group(t, h, "a", "alice", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_CREATE, Name: "g"}).Group.Id
	wantCode(t, "typing in a group one is not in", h.Typing(ctx, "a", "bob", "pc", &qimpb.Typing{ToGroup: g, Active: true}), qimpb.Code_FORBIDDEN)
	group(t, h, "a", "bob", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_JOIN, GroupId: g})
	if err := h.Typing(ctx, "a", "bob", "pc", &qimpb.Typing{ToGroup: g, Active: true}); err != nil {
		t.Fatal(err)
	}
	ns = alice.notes()
	if len(ns) != 1 || ns[0].Note.Typing.ToGroup != g || ns[0].Note.Typing.FromUser != "bob" {
		t.Fatalf("alice's group typing events: %v", ns)
	}
	if n := len(bob.notes()); n != 2 {
		t.Fatalf("bob got his own group typing: %d events", n)
	}
}

func TestReadMovesForwardAndTells(t *testing.T) {
	h := newHub(t, Config{})
	ctx := context.Background()
	alice, bob := listen(t, h, "a", "alice"), listen(t, h, "a", "bob")
	for i := range 3 {
		send(t, h, "a", text("alice", "bob", fmt.Sprint(i)))
	}
	wantCode(t, "read past the last seq", func() error {
		_, err := h.Read(ctx, "a", "bob", "pc", &qimpb.ReadRequest{ToUser: "alice", Seq: 4})
		return err
	}(), qimpb.Code_INVALID_ARGUMENT)
	res, err := h.Read(ctx, "a", "bob", "pc", &qimpb.ReadRequest{ToUser: "alice", Seq: 2})
	if err != nil {
		t.Fatal(err)
	}
	if res.ReadSeq != 2 || res.Unread != 1 {
		t.Fatalf("read result %v, want read 2 unread 1", res)
	}
	// Backwards changes nothing and tells nobody.
	if res, err = h.Read(ctx, "a", "bob", "pc", &qimpb.ReadRequest{ToUser: "alice", Seq: 1}); err != nil || res.ReadSeq != 2 {
		t.Fatalf("read backwards: %v %v", res, err)
	}
	var toAlice, toBob []*qimpb.Receipt
	for _, ev := range alice.notes() {
		toAlice = append(toAlice, ev.Note.Receipt)
	}
	for _, ev := range bob.notes() {
		toBob = append(toBob, ev.Note.Receipt)
	}
	if len(toAlice) != 1 || toAlice[0].User != "bob" || toAlice[0].ToUser != "bob" || toAlice[0].Read != 2 {
		t.Fatalf("alice's receipts: %v", toAlice)
	}
	if len(toBob) != 1 || toBob[0].ReadPrivate != 2 || toBob[0].ToUser != "alice" || toBob[0].Read != 0 {
		t.Fatalf("bob's own receipts: %v", toBob)
	}
	// Hidden: the cursor moves, alice learns nothing.
	if _, err = h.SetSettings(ctx, "a", "bob", &qimpb.Settings{HideReadReceipts: true}); err != nil {
		t.Fatal(err)
	}
	if _, err = h.Read(ctx, "a", "bob", "pc", &qimpb.ReadRequest{ToUser: "alice", Seq: 3}); err != nil {
		t.Fatal(err)
	}
	if n := len(alice.notes()); n != 1 {
		t.Fatalf("alice learnt a hidden read: %d receipts", n)
	}
	in, err := h.Inbox(ctx, "a", "alice", "phone")
	if err != nil {
		t.Fatal(err)
	}
	if len(in.Conversations) != 1 || in.Conversations[0].PeerRead != 2 || in.Conversations[0].Unread != 0 {
		t.Fatalf("alice's inbox: %v (her own messages are never unread; bob's shared read is 2)", in)
	}
	in, err = h.Inbox(ctx, "a", "bob", "pc")
	if err != nil {
		t.Fatal(err)
	}
	if c := in.Conversations[0]; c.ToUser != "alice" || c.ReadSeq != 3 || c.Unread != 0 || c.LastSeq != 3 {
		t.Fatalf("bob's inbox: %v", c)
	}
}

func TestGroupReceiptCounts(t *testing.T) {
	h := newHub(t, Config{})
	ctx := context.Background()
	const n = 100
	g := group(t, h, "a", "u0", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_CREATE, Name: "g"}).Group.Id
	for i := 1; i < n; i++ {
		group(t, h, "a", fmt.Sprint("u", i), &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_JOIN, GroupId: g})
	}
	seq := send(t, h, "a", text("u0", g, "hello")).Msg.Seq
	st := h.Store()
	// u1..u60 receive it, u1..u30 read it (u25 privately).
	for i := 1; i <= 60; i++ {
		if err := st.SetAcked(ctx, "a", fmt.Sprint("u", i), "d", "g:"+g, seq); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.SetSettings(ctx, "a", "u25", &qimpb.Settings{HideReadReceipts: true}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 30; i++ {
		if _, err := h.Read(ctx, "a", fmt.Sprint("u", i), "d", &qimpb.ReadRequest{ToGroup: g, Seq: seq}); err != nil {
			t.Fatal(err)
		}
	}
	var got []*qimpb.Receipt
	res := group(t, h, "a", "u0", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_RECEIPTS, GroupId: g, Seq: seq, Limit: 40})
	if c := res.Count; c.Members != n-1 || c.Delivered != 60 || c.Read != 29 {
		t.Fatalf("counts %v, want 99 members, 60 delivered, 29 read", c)
	}
	for {
		got = append(got, res.Receipts...)
		if res.NextUser == "" {
			break
		}
		res = group(t, h, "a", "u0", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_RECEIPTS, GroupId: g, Seq: seq, Limit: 40, AfterUser: res.NextUser})
	}
	if len(got) != n {
		t.Fatalf("paged %d receipts, want %d", len(got), n)
	}
	for _, r := range got {
		var i int
		fmt.Sscanf(r.User, "u%d", &i)
		wantRead := uint64(0)
		if i >= 1 && i <= 30 && i != 25 {
			wantRead = seq
		}
		if r.Read != wantRead {
			t.Fatalf("%s read %d, want %d", r.User, r.Read, wantRead)
		}
	}
	// A watch hears the next change, once.
	counts := make(chan *qimpb.ReceiptCount, 10)
	w := h.WatchReceipts("a", g, seq, res.Count, func(c *qimpb.ReceiptCount) { counts <- c })
	defer w.Stop()
	if _, err := h.Read(ctx, "a", "u99", "d", &qimpb.ReadRequest{ToGroup: g, Seq: seq}); err != nil {
		t.Fatal(err)
	}
	c := <-counts
	if c.Read != 30 || c.Delivered != 61 {
		t.Fatalf("watched count %v, want 30 read, 61 delivered", c)
	}
	wantCode(t, "receipts of a non-member", func() error {
		_, err := h.Group(ctx, "a", "stranger", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_RECEIPTS, GroupId: g, Seq: seq})
		return err
	}(), qimpb.Code_FORBIDDEN)
}

// TestWatchStartsWithARecount: a change between the count a watch starts
// from and its start (the count answered by GROUP_RECEIPTS, then the
// watch) reaches the watch.
func TestWatchStartsWithARecount(t *testing.T) {
	h := newHub(t, Config{})
	ctx := context.Background()
	g := group(t, h, "a", "u0", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_CREATE, Name: "g"}).Group.Id
	group(t, h, "a", "u1", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_JOIN, GroupId: g})
	seq := send(t, h, "a", text("u0", g, "hello")).Msg.Seq
	first, err := h.ReceiptCount(ctx, "a", g, seq)
	if err != nil {
		t.Fatal(err)
	}
	// u1 receives it before the watch starts: nobody watches yet.
	if err := h.Store().SetAcked(ctx, "a", "u1", "d", "g:"+g, seq); err != nil {
		t.Fatal(err)
	}
	h.Delivered("a", "u1", "g:"+g, seq)
	counts := make(chan *qimpb.ReceiptCount, 1)
	w := h.WatchReceipts("a", g, seq, first, func(c *qimpb.ReceiptCount) { counts <- c })
	defer w.Stop()
	select {
	case c := <-counts:
		if c.Delivered != 1 {
			t.Fatalf("count %v, want 1 delivered", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the watch never learnt of the delivery before it started")
	}
}

// TestReadAfterOwnReply: bob replies before he marks alice's message
// read (his own message moves his private cursor past it): alice still
// learns the read.
func TestReadAfterOwnReply(t *testing.T) {
	h := newHub(t, Config{})
	ctx := context.Background()
	alice := listen(t, h, "a", "alice")
	send(t, h, "a", text("alice", "bob", "question"))
	send(t, h, "a", text("bob", "alice", "answer"))
	res, err := h.Read(ctx, "a", "bob", "pc", &qimpb.ReadRequest{ToUser: "alice", Seq: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.ReadSeq != 2 || res.Unread != 0 {
		t.Fatalf("read result %v, want read 2 (his own reply) unread 0", res)
	}
	var reads []uint64
	for _, ev := range alice.notes() {
		if r := ev.Note.Receipt; r != nil && r.User == "bob" && r.Read > 0 {
			reads = append(reads, r.Read)
		}
	}
	if len(reads) != 1 || reads[0] != 1 {
		t.Fatalf("alice's read receipts from bob: %v, want [1]", reads)
	}
}

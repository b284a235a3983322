package pebblestore

import (
	"testing"
	"time"

	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// TestClaimPushWaitsForSync takes an Append apart at the point where its
// batch is written but its sync not yet seen (the job is in Pebble, the
// message not published): ClaimPush must not return the job then, since
// the worker could not read its message, and returns it once the Append
// has published.
func TestClaimPushWaitsForSync(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	defer s.Close()
	now := time.UnixMilli(1_800_000_000_000)
	a := store.Append{
		App: "org/app", Conv: store.DirectConv("alice", "bob"), Members: []string{"alice", "bob"},
		Msg:    &qimpb.Message{Type: qimpb.MessageType_TXT, FromUser: "alice", ToUser: "bob", FromDevice: "phone"},
		PushAt: now,
	}

	// Append's steps up to the wait for the sync (messages.go).
	s.appendMu.Lock()
	op, err := s.prepareAppend([]store.Append{a})
	if err == nil {
		err = s.apply(op.batch, true)
	}
	if err != nil {
		s.appendMu.Unlock()
		t.Fatal(err)
	}
	for _, p := range op.convs {
		p.c.last = p.last
	}
	s.lastID = op.lastID
	s.appendMu.Unlock()
	s.pushJobs.Add(op.jobs)

	if jobs, err := s.ClaimPush(t.Context(), now, time.Minute, 10); err != nil || len(jobs) != 0 {
		t.Fatalf("ClaimPush before the Append published its message: %+v, %v; want none", jobs, err)
	}

	if err := s.wait(op.batch, true); err != nil {
		t.Fatal(err)
	}
	for _, p := range op.convs {
		p.c.publish(p.last)
	}
	op.release()
	jobs, err := s.ClaimPush(t.Context(), now, time.Minute, 10)
	if err != nil || len(jobs) != 1 || jobs[0].Seq != 1 {
		t.Fatalf("ClaimPush after publishing: %+v, %v; want the job of seq 1", jobs, err)
	}
	if msgs, err := s.Messages(t.Context(), a.App, a.Conv, 0, 10); err != nil || len(msgs) != 1 {
		t.Errorf("Messages of the claimed job's conversation: %v, %v", msgs, err)
	}
}

package pebblestore

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

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

// TestClaimPushFloorRace appends jobs due in the past while other
// goroutines claim: an Append that lands while a claim is reading must not
// be left below the floor that claim raises (pushSince), so that every job
// is claimed in the end.
func TestClaimPushFloorRace(t *testing.T) {
	s := openT(t, "db", Options{FS: vfs.NewMem(), NoSync: true})
	defer s.Close()
	now := time.UnixMilli(1_800_000_000_000)
	const appenders, perAppender, claimers = 4, 500, 2
	var claimed sync.Map
	var count atomic.Int64
	claim := func() error {
		jobs, err := s.ClaimPush(t.Context(), now, time.Hour, 50)
		for _, j := range jobs {
			if _, dup := claimed.LoadOrStore(j.ID, true); dup {
				t.Errorf("job %d claimed twice", j.ID)
			}
			count.Add(1)
		}
		return err
	}
	var appending, claiming sync.WaitGroup
	stop := make(chan struct{})
	for range claimers {
		claiming.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := claim(); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for w := range appenders {
		appending.Go(func() {
			for i := range perAppender {
				// Due a millisecond before now, later in each call: below
				// the floor of every claim that finished before.
				a := store.Append{
					App: "org/app", Conv: store.DirectConv(fmt.Sprint("w", w), "bob"), Members: []string{fmt.Sprint("w", w), "bob"},
					Msg:    &qimpb.Message{Type: qimpb.MessageType_TXT, FromUser: fmt.Sprint("w", w), ToUser: "bob", FromDevice: "phone"},
					PushAt: now.Add(-time.Duration(perAppender-i) * time.Millisecond),
				}
				if _, err := s.Append(t.Context(), []store.Append{a}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	appending.Wait()
	close(stop)
	claiming.Wait()
	for range appenders * perAppender {
		if count.Load() == appenders*perAppender {
			break
		}
		if err := claim(); err != nil {
			t.Fatal(err)
		}
	}
	if n := count.Load(); n != appenders*perAppender {
		t.Errorf("%d jobs claimed, want %d: some were left below the floor", n, appenders*perAppender)
	}
}

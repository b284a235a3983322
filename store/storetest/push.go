package storetest

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/qim-im/qim/store"
)

// The offline-push outbox. Times are given explicitly (ClaimPush takes its
// now), from pushT, a whole millisecond.

var pushT = time.UnixMilli(1_800_000_000_000)

// at returns pushT plus d.
func at(d time.Duration) time.Time { return pushT.Add(d) }

// withPush returns a with PushAt set.
func withPush(a store.Append, pushAt time.Time) store.Append {
	a.PushAt = pushAt
	return a
}

func mustClaim(t *testing.T, s store.Store, now time.Time, lease time.Duration, limit int) []store.PushJob {
	t.Helper()
	jobs, err := s.ClaimPush(t.Context(), now, lease, limit)
	if err != nil {
		t.Fatalf("ClaimPush(%v, %v, %d): %v", now.Sub(pushT), lease, limit, err)
	}
	return jobs
}

func mustBacklog(t *testing.T, s store.Store) int {
	t.Helper()
	n, err := s.PushBacklog(t.Context())
	if err != nil {
		t.Fatalf("PushBacklog: %v", err)
	}
	return n
}

func mustRetry(t *testing.T, s store.Store, job store.PushJob) {
	t.Helper()
	if err := s.RetryPush(t.Context(), job); err != nil {
		t.Fatalf("RetryPush(%d): %v", job.ID, err)
	}
}

func mustFinish(t *testing.T, s store.Store, id uint64) {
	t.Helper()
	if err := s.FinishPush(t.Context(), id); err != nil {
		t.Fatalf("FinishPush(%d): %v", id, err)
	}
}

// jobIDs returns the ids of jobs.
func jobIDs(jobs []store.PushJob) []uint64 {
	out := []uint64{}
	for _, j := range jobs {
		out = append(out, j.ID)
	}
	return out
}

// checkJob compares a claimed job with what it should hold.
func checkJob(t *testing.T, what string, got, want store.PushJob) {
	t.Helper()
	if got.ID != want.ID || got.App != want.App || got.Conv != want.Conv || got.Seq != want.Seq ||
		got.Attempts != want.Attempts || !got.Next.Equal(want.Next) ||
		(got.Users == nil) != (want.Users == nil) || !slices.Equal(got.Users, want.Users) {
		t.Errorf("%s: job %+v (Users nil: %t), want %+v (Users nil: %t)", what, got, got.Users == nil, want, want.Users == nil)
	}
}

// testPushAppend checks that an Append with PushAt adds exactly one job per
// stored message, none for a duplicate (across calls or within one) or for
// a message without PushAt, and that jobs carry their message's app,
// conversation and seq, ids that increase with each Append, no users and
// no attempts.
func testPushAppend(t *testing.T, s store.Store) {
	if n := mustBacklog(t, s); n != 0 {
		t.Fatalf("PushBacklog of an empty store = %d", n)
	}
	if jobs := mustClaim(t, s, at(time.Hour), time.Minute, 10); len(jobs) != 0 {
		t.Fatalf("ClaimPush of an empty store: %v", jobs)
	}
	first := mustAppend(t, s,
		withPush(direct(appA, "alice", "bob", "c1", "pushed"), at(0)),
		direct(appA, "alice", "bob", "c2", "not pushed"),
		withPush(group(appB, "carol", "g1", "c1", "pushed, other app"), at(0)),
		withPush(direct(appA, "alice", "bob", "c1", "repeat within the call"), at(0)),
	)
	if n := mustBacklog(t, s); n != 2 {
		t.Errorf("after 2 messages with PushAt, 1 without and a repeat: PushBacklog = %d, want 2", n)
	}
	again := mustAppend(t, s,
		withPush(direct(appA, "alice", "bob", "c1", "retry"), at(0)),
		withPush(direct(appA, "bob", "alice", "c3", "pushed later"), at(time.Second)),
	)
	if !again[0].Duplicate {
		t.Fatalf("retry of c1 not a duplicate")
	}
	if n := mustBacklog(t, s); n != 3 {
		t.Errorf("after a retried message and a new one with PushAt: PushBacklog = %d, want 3", n)
	}

	jobs := mustClaim(t, s, at(time.Second), time.Minute, 10)
	if len(jobs) != 3 {
		t.Fatalf("claimed %d jobs, want 3: %+v", len(jobs), jobs)
	}
	next := at(time.Second + time.Minute)
	checkJob(t, "job of the first message", jobs[0], store.PushJob{ID: jobs[0].ID, App: appA, Conv: store.DirectConv("alice", "bob"), Seq: first[0].Msg.Seq, Next: next})
	checkJob(t, "job of the group message", jobs[1], store.PushJob{ID: jobs[1].ID, App: appB, Conv: store.GroupConv("g1"), Seq: first[2].Msg.Seq, Next: next})
	checkJob(t, "job of the later message", jobs[2], store.PushJob{ID: jobs[2].ID, App: appA, Conv: store.DirectConv("alice", "bob"), Seq: again[1].Msg.Seq, Next: next})
	if !(jobs[0].ID < jobs[2].ID && jobs[1].ID < jobs[2].ID) || jobs[0].ID == jobs[1].ID {
		t.Errorf("job ids %v: want distinct, the later Append's larger", jobIDs(jobs))
	}
}

// testClaimPush checks that ClaimPush returns due jobs only, earliest Next
// first (ties by id), at most limit, that it hides the jobs it returns for
// the lease, to the millisecond, and returns them again after it; and that
// a job added due earlier than everything claimed so far is found.
func testClaimPush(t *testing.T, s store.Store) {
	var ids []uint64 // a, b, c, d, e
	for i, due := range []time.Duration{3 * time.Second, time.Second, 2 * time.Second, 10 * time.Second, time.Second} {
		res := mustAppend(t, s, withPush(direct(appA, "alice", "bob", fmt.Sprint("c", i), "x"), at(due)))
		ids = append(ids, res[0].Msg.Id)
	}
	a, b, c, d, e := 0, 1, 2, 3, 4
	claim := func(now time.Duration, limit int, want ...int) []store.PushJob {
		t.Helper()
		jobs := mustClaim(t, s, at(now), time.Minute, limit)
		var got []int
		for _, j := range jobs {
			got = append(got, slices.Index(ids, j.ID))
			if !j.Next.Equal(at(now + time.Minute)) {
				t.Errorf("claim at %v: job %d has Next %v, want the end of its lease %v", now, slices.Index(ids, j.ID), j.Next.Sub(pushT), now+time.Minute)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("claim at %v, limit %d: jobs %v, want %v (a=0 b=1 c=2 d=3 e=4 late=5)", now, limit, got, want)
		}
		return jobs
	}
	claim(0, 10)
	claim(time.Second-time.Millisecond, 10)
	claim(2*time.Second, 0)
	claim(2*time.Second, -1)
	claim(2*time.Second, 2, b, e)
	claim(2*time.Second, 10, c)
	claim(5*time.Second, 10, a)
	// b, e, c are leased until 62 s, a until 65 s; d is due at 10 s.
	claim(time.Minute+2*time.Second-time.Millisecond, 10, d)
	claim(time.Minute+2*time.Second, 10, b, c, e)
	claim(time.Minute+5*time.Second, 10, a)
	if n := mustBacklog(t, s); n != 5 {
		t.Errorf("PushBacklog after claims = %d, want 5: claiming removes nothing", n)
	}
	// A job due before every claim so far is still found.
	res := mustAppend(t, s, withPush(direct(appA, "alice", "bob", "late", "x"), at(-time.Hour)))
	ids = append(ids, res[0].Msg.Id)
	claim(time.Minute+5*time.Second, 10, 5)
}

// testRetryFinishPush checks that RetryPush stores Users (non-nil from
// then on), Attempts and Next and leaves the rest, that FinishPush removes
// a job for good, and that both accept a missing job without adding it.
func testRetryFinishPush(t *testing.T, s store.Store) {
	res := mustAppend(t, s,
		withPush(group(appA, "alice", "g1", "c1", "x"), at(0)),
		withPush(group(appA, "alice", "g1", "c2", "y"), at(0)),
	)
	jobs := mustClaim(t, s, at(0), time.Minute, 10)
	if len(jobs) != 2 || jobs[0].Users != nil {
		t.Fatalf("claimed %+v, want 2 jobs with Users nil", jobs)
	}
	j := jobs[0]
	want := store.PushJob{ID: j.ID, App: appA, Conv: store.GroupConv("g1"), Seq: res[0].Msg.Seq}

	// Users nil is stored as empty; App, Conv and Seq are not RetryPush's.
	retry := j
	retry.App, retry.Conv, retry.Seq = appB, "g:other", 99
	retry.Users, retry.Attempts, retry.Next = nil, 1, at(5*time.Second)
	mustRetry(t, s, retry)
	if got := mustClaim(t, s, at(5*time.Second-time.Millisecond), time.Minute, 10); len(got) != 0 {
		t.Errorf("claim before the retry's Next: %+v", got)
	}
	got := mustClaim(t, s, at(5*time.Second), time.Minute, 10)
	want.Users, want.Attempts, want.Next = []string{}, 1, at(5*time.Second+time.Minute)
	if len(got) != 1 {
		t.Fatalf("claim at the retry's Next: %+v, want job %d", got, j.ID)
	}
	checkJob(t, "after RetryPush with Users nil", got[0], want)

	retry.Users, retry.Attempts, retry.Next = []string{"bob", "carol"}, 2, at(7*time.Second)
	mustRetry(t, s, retry)
	got = mustClaim(t, s, at(7*time.Second), time.Minute, 10)
	want.Users, want.Attempts, want.Next = []string{"bob", "carol"}, 2, at(7*time.Second+time.Minute)
	if len(got) != 1 {
		t.Fatalf("claim at the second retry's Next: %+v, want job %d", got, j.ID)
	}
	checkJob(t, "after RetryPush with Users", got[0], want)

	// A retry may move a job earlier than its lease's end.
	retry.Next = at(0)
	mustRetry(t, s, retry)
	if got := mustClaim(t, s, at(8*time.Second), time.Minute, 10); !slices.Equal(jobIDs(got), []uint64{j.ID}) {
		t.Errorf("claim after a retry into the past: %v, want [%d]", jobIDs(got), j.ID)
	}

	if n := mustBacklog(t, s); n != 2 {
		t.Errorf("PushBacklog before FinishPush = %d, want 2", n)
	}
	mustFinish(t, s, j.ID)
	if n := mustBacklog(t, s); n != 1 {
		t.Errorf("PushBacklog after FinishPush = %d, want 1", n)
	}
	mustFinish(t, s, j.ID)
	mustRetry(t, s, retry)
	mustFinish(t, s, j.ID+1<<40)
	if n := mustBacklog(t, s); n != 1 {
		t.Errorf("PushBacklog after finishing and retrying a finished job = %d, want 1", n)
	}
	// Only the other job is left, whatever the time.
	if got := mustClaim(t, s, at(24*time.Hour), time.Minute, 10); !slices.Equal(jobIDs(got), []uint64{jobs[1].ID}) {
		t.Errorf("claim after FinishPush: %v, want [%d] only", jobIDs(got), jobs[1].ID)
	}
	mustFinish(t, s, jobs[1].ID)
	if n := mustBacklog(t, s); n != 0 {
		t.Errorf("PushBacklog after finishing every job = %d", n)
	}
	if got := mustClaim(t, s, at(48*time.Hour), time.Minute, 10); len(got) != 0 {
		t.Errorf("claim of an empty outbox: %v", jobIDs(got))
	}
}

// testPushConcurrentClaim claims from several goroutines while others
// append jobs that are due at once: no job is returned twice within its
// lease, and every job is returned once all are done.
func testPushConcurrentClaim(t *testing.T, s store.Store) {
	const (
		preloaded = 100
		appenders = 4
		perWriter = 25
		claimers  = 6
	)
	for i := range preloaded {
		mustAppend(t, s, withPush(direct(appA, fmt.Sprint("u", i%10), "peer", fmt.Sprint("p", i), "x"), at(0)))
	}
	var (
		mu      sync.Mutex
		claimed = make(map[uint64]int)
		stored  = make(map[uint64]bool)
	)
	var appending, claiming sync.WaitGroup
	for w := range appenders {
		appending.Go(func() {
			for i := range perWriter {
				res, err := s.Append(t.Context(), []store.Append{
					withPush(direct(appA, fmt.Sprint("w", w), "peer", fmt.Sprint("c", i), "x"), at(0)),
				})
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				mu.Lock()
				stored[res[0].Msg.Id] = true
				mu.Unlock()
			}
		})
	}
	done := make(chan struct{})
	for range claimers {
		claiming.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				jobs, err := s.ClaimPush(t.Context(), at(time.Second), time.Hour, 7)
				if err != nil {
					t.Errorf("ClaimPush: %v", err)
					return
				}
				mu.Lock()
				for _, j := range jobs {
					claimed[j.ID]++
				}
				mu.Unlock()
			}
		})
	}
	appending.Wait()
	// Every job appended is due; claims go on until none is left.
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(claimed)
		mu.Unlock()
		if n >= preloaded+appenders*perWriter || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	close(done)
	claiming.Wait()

	if len(claimed) != preloaded+appenders*perWriter {
		t.Errorf("%d jobs claimed, want %d", len(claimed), preloaded+appenders*perWriter)
	}
	for id, n := range claimed {
		if n != 1 {
			t.Errorf("job %d claimed %d times within one lease", id, n)
		}
	}
	for id := range stored {
		if claimed[id] == 0 {
			t.Errorf("job %d (a concurrent Append's) never claimed", id)
		}
	}
	if n := mustBacklog(t, s); n != preloaded+appenders*perWriter {
		t.Errorf("PushBacklog = %d, want %d", n, preloaded+appenders*perWriter)
	}
}

// testDeliveredTo checks DeliveredTo across several users and devices: a
// user counts if any device's cursor of the conversation is at seq or
// beyond; cursors of other conversations, of other apps and a group's join
// point do not count; the result keeps the users' order.
func testDeliveredTo(t *testing.T, s store.Store) {
	conv := store.DirectConv("alice", "bob")
	for i := range 3 {
		mustAppend(t, s, direct(appA, "alice", "bob", fmt.Sprint("c", i), "x"))
	}
	// alice: laptop at 1, phone at 3, tablet only elsewhere; "aaa"
	// acknowledged many other conversations, sorting before them.
	mustSetAcked(t, s, appA, "alice", "laptop", conv, 1)
	mustSetAcked(t, s, appA, "alice", "phone", conv, 3)
	mustSetAcked(t, s, appA, "alice", "tablet", "u:alice:zed", 9)
	for i := range 20 {
		mustSetAcked(t, s, appA, "alice", "aaa", fmt.Sprintf("u:alice:x%02d", i), 50)
	}
	mustSetAcked(t, s, appA, "bob", "phone", conv, 2)
	mustSetAcked(t, s, appA, "carol", "phone", "u:carol:zed", 10)
	mustSetAcked(t, s, appB, "dave", "phone", conv, 10) // another app
	mustSetAcked(t, s, appA, "alicex", "phone", conv+"x", 10)

	users := []string{"carol", "bob", "al", "alice", "dave", "zed"}
	for _, tt := range []struct {
		seq  uint64
		want []string
	}{
		{1, []string{"bob", "alice"}},
		{2, []string{"bob", "alice"}},
		{3, []string{"alice"}},
		{4, nil},
	} {
		got, err := s.DeliveredTo(t.Context(), appA, conv, tt.seq, users)
		if err != nil {
			t.Fatalf("DeliveredTo(seq %d): %v", tt.seq, err)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("DeliveredTo(seq %d, %v) = %v, want %v", tt.seq, users, got, tt.want)
		}
	}
	if got, err := s.DeliveredTo(t.Context(), appA, conv, 1, []string{"alice", "bob"}); err != nil || !slices.Equal(got, []string{"alice", "bob"}) {
		t.Errorf("DeliveredTo(alice, bob) = %v, %v; want the given order", got, err)
	}
	if got, err := s.DeliveredTo(t.Context(), appA, conv, 1, nil); err != nil || len(got) != 0 {
		t.Errorf("DeliveredTo of no users = %v, %v", got, err)
	}

	// A group member who joined after seq 1 has not acknowledged it.
	mustCreateGroup(t, s, appA, "g1", "alice")
	mustAppend(t, s, group(appA, "alice", "g1", "", "1"), group(appA, "alice", "g1", "", "2"))
	mustJoin(t, s, appA, "g1", "zed")
	mustSetAcked(t, s, appA, "alice", "phone", store.GroupConv("g1"), 2)
	if got, err := s.DeliveredTo(t.Context(), appA, store.GroupConv("g1"), 1, []string{"zed", "alice"}); err != nil || !slices.Equal(got, []string{"alice"}) {
		t.Errorf("DeliveredTo(g1, seq 1, zed alice) = %v, %v; want [alice]", got, err)
	}
}

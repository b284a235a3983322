package pgstore

import (
	"context"
	"crypto/rand"
	"fmt"
	"github.com/qim-im/qim/internal/pgtest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/qim-im/qim/store"
)

// callBound is how long an Append may take in the recovery tests before
// the test fails: each call has a deadline of appendDeadline, and a lost
// connection must make it fail rather than hang.
const (
	appendDeadline = 3 * time.Second
	callBound      = appendDeadline + time.Second
)

// TestRecoverProxyOutage puts a TCP proxy between the Store and
// PostgreSQL and, under a running append loop, cuts every connection and
// refuses new ones for 2 s: appends fail meanwhile (within callBound),
// succeed again on the same Store afterwards, and every append that
// succeeded is stored, with dense seqs.
func TestRecoverProxyOutage(t *testing.T) {
	dbURL := testURL(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	p := pgtest.StartProxy(t, u.Host)
	u.Host = p.Addr()
	schema := newSchema(t, dbURL)
	s := openT(t, u.String(), schema)
	defer s.Close()

	l := startAppendLoop(t, s)
	l.waitSuccesses(t, 20)
	p.SetRefusing(true)
	p.Cut()
	outageStart := l.counts()
	time.Sleep(2 * time.Second) // the outage
	outageEnd := l.counts()
	p.SetRefusing(false)
	l.waitSuccesses(t, outageEnd.successes+20)
	l.stop()

	if errs := outageEnd.errors - outageStart.errors; errs == 0 {
		t.Error("no append failed during the outage")
	}
	t.Logf("outage: %d errors, %d successes (calls in flight at the cut); %d successes in all",
		outageEnd.errors-outageStart.errors, outageEnd.successes-outageStart.successes, l.counts().successes)
	l.check(t, s)
}

// TestRecoverTerminatedBackends terminates the Store's server processes
// (pg_terminate_backend, found by application_name) under a running
// append loop, three times: appends succeed again on the same Store, and
// every append that succeeded is stored, with dense seqs.
func TestRecoverTerminatedBackends(t *testing.T) {
	dbURL := testURL(t)
	appName := "qimtest_" + rand.Text()[:12]
	schema := newSchema(t, dbURL)
	s := openT(t, withParam(t, dbURL, "application_name", appName), schema)
	defer s.Close()
	admin, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())

	l := startAppendLoop(t, s)
	l.waitSuccesses(t, 20)
	killed := 0
	for range 3 {
		var n int
		err := admin.QueryRow(t.Context(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE application_name = $1 AND pid <> pg_backend_pid()`, appName).Scan(&n)
		if err != nil {
			t.Fatalf("pg_terminate_backend: %v", err)
		}
		killed += n
		l.waitSuccesses(t, l.counts().successes+10)
	}
	l.stop()
	if killed == 0 {
		t.Fatal("no backend of the Store found to terminate")
	}
	t.Logf("%d backends terminated; %d appends failed, %d succeeded", killed, l.counts().errors, l.counts().successes)
	l.check(t, s)
}

// appendLoop appends batches of 4 messages over 4 conversations, one call
// at a time (as the hub's committer does), until stopped, and records the
// outcome of every call.
type appendLoop struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	acked    []store.AppendResult // guarded by mu
	errors   int                  // guarded by mu
	longest  time.Duration        // guarded by mu
	progress chan struct{}        // closed and replaced at every success; guarded by mu
}

const (
	loopApp   = "org/app"
	loopConvs = 4
)

func loopConv(c int) string { return store.DirectConv(fmt.Sprint("u", c), "peer") }

func startAppendLoop(t *testing.T, s *Store) *appendLoop {
	ctx, cancel := context.WithCancel(t.Context())
	l := &appendLoop{cancel: cancel, progress: make(chan struct{})}
	l.wg.Go(func() {
		for call := 0; ctx.Err() == nil; call++ {
			msgs := make([]store.Append, loopConvs)
			for c := range msgs {
				from := fmt.Sprint("u", c)
				msgs[c] = store.Append{App: loopApp, Conv: loopConv(c), Members: []string{from, "peer"},
					Msg: testMessage(from, "peer", fmt.Sprintf("%d-%d", call, c))}
			}
			cctx, ccancel := context.WithTimeout(ctx, appendDeadline)
			start := time.Now()
			res, err := s.Append(cctx, msgs)
			d := time.Since(start)
			ccancel()
			l.mu.Lock()
			l.longest = max(l.longest, d)
			if err == nil {
				l.acked = append(l.acked, res...)
				close(l.progress)
				l.progress = make(chan struct{})
			} else if ctx.Err() == nil {
				l.errors++
			}
			l.mu.Unlock()
			if err != nil {
				select { // back off a little: failures are immediate
				case <-ctx.Done():
				case <-time.After(10 * time.Millisecond):
				}
			}
		}
	})
	return l
}

type loopCounts struct{ successes, errors int }

func (l *appendLoop) counts() loopCounts {
	l.mu.Lock()
	defer l.mu.Unlock()
	return loopCounts{len(l.acked) / loopConvs, l.errors}
}

// waitSuccesses waits until n calls have succeeded, failing the test after
// 20 s.
func (l *appendLoop) waitSuccesses(t *testing.T, n int) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		l.mu.Lock()
		done, progress := len(l.acked)/loopConvs >= n, l.progress
		l.mu.Unlock()
		if done {
			return
		}
		select {
		case <-progress:
		case <-timeout:
			l.stop()
			t.Fatalf("fewer than %d successful appends after 20 s (%+v): the Store did not recover", n, l.counts())
		}
	}
}

func (l *appendLoop) stop() {
	l.cancel()
	l.wg.Wait()
}

// check checks, after stop, that no call took longer than callBound and
// that every conversation holds seqs 1..LastSeq with every acknowledged
// message among them.
func (l *appendLoop) check(t *testing.T, s *Store) {
	t.Helper()
	if l.longest > callBound {
		t.Errorf("an Append took %v, more than %v", l.longest, callBound)
	}
	byConv := make(map[string]map[uint64]uint64) // conv -> seq -> id
	for c := range loopConvs {
		conv := loopConv(c)
		last, err := s.LastSeq(t.Context(), loopApp, conv)
		if err != nil {
			t.Fatalf("LastSeq: %v", err)
		}
		msgs, err := s.Messages(t.Context(), loopApp, conv, 0, int(last)+10)
		if err != nil {
			t.Fatalf("Messages: %v", err)
		}
		if uint64(len(msgs)) != last {
			t.Errorf("%s: %d messages, LastSeq %d", conv, len(msgs), last)
		}
		byConv[conv] = make(map[uint64]uint64)
		for i, m := range msgs {
			if m.Seq != uint64(i+1) {
				t.Fatalf("%s: message %d has seq %d", conv, i, m.Seq)
			}
			byConv[conv][m.Seq] = m.Id
		}
	}
	for _, r := range l.acked {
		conv := store.DirectConv(r.Msg.FromUser, r.Msg.ToUser)
		if id, ok := byConv[conv][r.Msg.Seq]; !ok || id != r.Msg.Id {
			t.Errorf("acknowledged %s seq %d id %d: stored id %d (found %t)", conv, r.Msg.Seq, r.Msg.Id, id, ok)
		}
	}
}

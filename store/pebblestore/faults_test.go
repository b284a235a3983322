package pebblestore

import (
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// logFault returns a file system that, while on is set, fails operations of
// kind on Pebble's write-ahead log.
func logFault(kind errorfs.OpKind, on *atomic.Bool) vfs.FS {
	return errorfs.Wrap(vfs.Default, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if on.Load() && op.Kind == kind && strings.HasSuffix(op.Path, ".log") {
			return errorfs.ErrInjected
		}
		return nil
	}))
}

func msg(from, to, clientMsgID string) store.Append {
	return store.Append{
		App:     "org/app",
		Conv:    store.DirectConv(from, to),
		Members: []string{from, to},
		Msg:     &qimpb.Message{Type: qimpb.MessageType_TXT, Payload: []byte("x"), ToUser: to, FromUser: from, ClientMsgId: clientMsgID},
	}
}

// TestAppendLogFailure injects an error into the write or the sync of
// Pebble's log during an Append, and shows what the Store and Pebble do.
//
// The failing Append returns an error wrapping ErrFailed and the cause, and
// leaves the caller's messages as they were. From then on every call fails
// with ErrFailed, even once the file system works again: Pebble's log error
// is sticky, and Pebble has already made the failed batch readable, so the
// Store refuses reads too. Close does not crash and reports the error.
//
// After reopening, the store is consistent either way, but whether the
// failed call was stored depends on the fault: after a failed sync the
// batch had reached the file (write(2) succeeded) and is replayed, so a
// retry of its ClientMsgIds is a duplicate with the seqs of the failed call;
// after a failed write it is gone and a retry stores it afresh. Either way
// no seq is skipped or given twice.
func TestAppendLogFailure(t *testing.T) {
	for _, tt := range []struct {
		name     string
		kind     errorfs.OpKind
		survives bool
	}{
		{"sync", errorfs.OpFileSyncData, true},
		{"write", errorfs.OpFileWrite, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			dir := t.TempDir()
			conv := store.DirectConv("alice", "bob")
			var on atomic.Bool
			s := openT(t, dir, Options{FS: logFault(tt.kind, &on)})
			if _, err := s.Append(ctx, []store.Append{msg("alice", "bob", "1"), msg("bob", "alice", "2")}); err != nil {
				t.Fatalf("Append: %v", err)
			}

			on.Store(true)
			failed := []store.Append{msg("alice", "bob", "3"), msg("alice", "bob", "4")}
			_, err := s.Append(ctx, failed)
			if !errors.Is(err, ErrFailed) || !errors.Is(err, errorfs.ErrInjected) {
				t.Fatalf("Append with a failing log: %v, want ErrFailed and the injected error", err)
			}
			t.Logf("failed Append: %v", err)
			if m := failed[0].Msg; m.Seq != 0 || m.Id != 0 || m.Timestamp != 0 {
				t.Errorf("failed Append left seq %d id %d timestamp %d on the message", m.Seq, m.Id, m.Timestamp)
			}

			on.Store(false)
			for name, err := range map[string]error{
				"LastSeq":  second(s.LastSeq(ctx, "org/app", conv)),
				"Messages": second(s.Messages(ctx, "org/app", conv, 0, 10)),
				"Append":   second(s.Append(ctx, []store.Append{msg("alice", "bob", "5")})),
				"SetAcked": s.SetAcked(ctx, "org/app", "bob", "phone", conv, 1),
			} {
				if !errors.Is(err, ErrFailed) {
					t.Errorf("%s after the failure: %v, want ErrFailed", name, err)
				}
			}
			err = s.Close()
			t.Logf("Close after the failure: %v", err)

			s = openT(t, dir, Options{})
			defer s.Close()
			want := uint64(2)
			if tt.survives {
				want = 4
			}
			if last, err := s.LastSeq(ctx, "org/app", conv); err != nil || last != want {
				t.Fatalf("after reopen: LastSeq %d, %v; want %d", last, err, want)
			}
			res, err := s.Append(ctx, []store.Append{msg("alice", "bob", "3"), msg("alice", "bob", "4"), msg("alice", "bob", "5")})
			if err != nil {
				t.Fatalf("Append after reopen: %v", err)
			}
			for i, r := range res {
				dup := tt.survives && i < 2
				if r.Duplicate != dup || r.Msg.Seq != uint64(3+i) {
					t.Errorf("retry %d after reopen: seq %d, Duplicate %t; want seq %d, Duplicate %t", i, r.Msg.Seq, r.Duplicate, 3+i, dup)
				}
			}
			msgs, err := s.Messages(ctx, "org/app", conv, 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			var got []uint64
			for _, m := range msgs {
				got = append(got, m.Seq)
			}
			if !slices.Equal(got, []uint64{1, 2, 3, 4, 5}) {
				t.Errorf("seqs after reopen: %v", got)
			}
		})
	}
}

func second[T any](_ T, err error) error { return err }

func TestFatalfPanics(t *testing.T) {
	defer func() {
		if f, ok := recover().(fatalError); !ok || f.Error() != "boom 1" {
			t.Errorf("recovered %v, want fatalError %q", f, "boom 1")
		}
	}()
	pebbleLogger{slog.New(slog.DiscardHandler)}.Fatalf("boom %d", 1)
	t.Error("Fatalf returned")
}

// TestReadsWaitForSync holds Pebble's log sync and checks that a message is
// not readable through the Store before its sync completes, although Pebble
// already has it, and that a second Append allocates the next seq without
// waiting for the first one's sync.
func TestReadsWaitForSync(t *testing.T) {
	ctx := t.Context()
	gate, fs := newSyncGate()
	s := openT(t, t.TempDir(), Options{FS: fs})
	defer s.Close()
	conv := store.DirectConv("alice", "bob")

	defer gate.open() // before Close, which waits for the Appends

	gate.hold.Store(true)
	done := make(chan []store.AppendResult, 2)
	appendOne := func(id string) {
		res, err := s.Append(ctx, []store.Append{msg("alice", "bob", id)})
		if err != nil {
			t.Errorf("Append: %v", err)
		}
		done <- res
	}
	go appendOne("1")
	<-gate.blocked // the first Append's batch is written and being synced
	go appendOne("2")

	// Pebble serves the unsynced message (once it has applied it to the
	// memtable, which may follow the start of the sync); the Store does not.
	for deadline := time.Now().Add(5 * time.Second); ; {
		_, closer, err := s.db.Get(msgKey("org/app", conv, 1))
		if err == nil {
			closer.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Pebble does not have the unsynced message: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
	if last, err := s.LastSeq(ctx, "org/app", conv); err != nil || last != 0 {
		t.Errorf("LastSeq before the sync = %d, %v; want 0", last, err)
	}
	if msgs, err := s.Messages(ctx, "org/app", conv, 0, 10); err != nil || len(msgs) != 0 {
		t.Errorf("Messages before the sync = %d messages, %v; want none", len(msgs), err)
	}
	if inbox, err := s.Inbox(ctx, "org/app", "bob", "phone"); err != nil || len(inbox) != 0 {
		t.Errorf("Inbox before the sync = %v, %v; want empty", inbox, err)
	}

	gate.open()
	var got []uint64
	for range 2 {
		for _, r := range <-done {
			got = append(got, r.Msg.Seq)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, []uint64{1, 2}) {
		t.Errorf("seqs %v, want [1 2]", got)
	}
	if last, err := s.LastSeq(ctx, "org/app", conv); err != nil || last != 2 {
		t.Errorf("LastSeq after the sync = %d, %v; want 2", last, err)
	}
}

// syncGate holds the syncs of Pebble's log while held: each held sync
// signals on blocked, then waits until open is called.
type syncGate struct {
	hold    atomic.Bool
	blocked chan struct{}
	release chan struct{}
	once    sync.Once
}

// newSyncGate returns a gate, not held, and the file system it guards.
func newSyncGate() (*syncGate, vfs.FS) {
	g := &syncGate{blocked: make(chan struct{}, 16), release: make(chan struct{})}
	return g, errorfs.Wrap(vfs.Default, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if g.hold.Load() && op.Kind == errorfs.OpFileSyncData && strings.HasSuffix(op.Path, ".log") {
			g.blocked <- struct{}{}
			<-g.release
		}
		return nil
	}))
}

// open lets every sync through, now and from now on.
func (g *syncGate) open() {
	g.hold.Store(false)
	g.once.Do(func() { close(g.release) })
}

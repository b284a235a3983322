// Package pebblestore implements store.Store on an embedded Pebble database
// kept in one data directory.
//
// Writes are fsynced before they return (Options.NoSync aside). Concurrent
// Append calls share fsyncs: sequence numbers are allocated and the batch is
// written to the log under a mutex, and the wait for the fsync happens after
// the mutex is released. Pebble makes a batch readable before its fsync
// completes; the Store hides that for messages by serving reads only up to
// each conversation's highest synced sequence number, so a reader never sees
// a message that a power failure could take back and whose seq could then be
// given to another message. Outbox jobs (store.PushJob) are written in their
// message's batch, and ClaimPush skips those whose message is not published
// yet, so a job is never claimed before its message is readable.
//
// The key layout is described in keys.go.
package pebblestore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/qim-im/qim/store"
)

// ErrFailed is returned, wrapped together with the cause, by the call whose
// write failed and by every later call except Close.
//
// When Pebble fails to write or sync its log, the failed batch is already
// visible to reads, every later synced write fails with the same error, and
// the next memtable rotation (a flush, or a full memtable) crashes the
// process with an unrecoverable "sync: unlock of unlocked mutex". Whether
// the failed batch survives a restart is unknown: after an fsync error the
// data has usually reached the file and is replayed. The Store therefore
// stops serving after the first failed write, so that no caller reads data
// it was told was not stored and no later write brings the process down.
// Close it and Open the directory again: the reopened store holds every call
// that returned success and possibly the failed one, with dense seqs either
// way, and a retry with the same ClientMsgIds is deduplicated.
var ErrFailed = errors.New("pebblestore: store failed after a write error; reopen it")

// Options configures a Store. The zero value is ready to use.
type Options struct {
	// Logger receives Pebble's log output, informational messages at Debug
	// level and errors at Error level. Nil discards it.
	Logger *slog.Logger

	// NoSync makes writes return before they are synced to stable storage,
	// so a crash may lose the latest of them. It is for tests and
	// benchmarks only. The default, false, syncs every write as
	// store.Store requires.
	NoSync bool

	// FS is the file system holding the database. Nil means the operating
	// system's (vfs.Default), with every directory and file the store
	// creates readable by its owner only (0700, 0600). Tests may pass vfs.NewMem() for an in-memory
	// store, or wrap a file system with the injectors of
	// github.com/cockroachdb/pebble/v2/vfs/errorfs to make writes or syncs
	// fail (Pebble writes its log, files ending in ".log", with Write and
	// syncs it with SyncData). See ErrFailed for what follows a failed write.
	FS vfs.FS

	// CacheSize is the size in bytes of Pebble's block cache. Zero means
	// 256 MiB.
	CacheSize int64

	// MaxCachedConvs bounds the conversations whose sequence state the
	// Store keeps in memory (about 150 bytes each); least recently used
	// ones, approximately, are evicted and read again from the database
	// when next written. Conversations with an Append in flight are never
	// evicted, so the cache may exceed the bound by their number. Zero or
	// less means 100,000.
	MaxCachedConvs int
}

// Store is a store.Store kept in a Pebble database. All methods are safe for
// concurrent use.
type Store struct {
	// Static after Open.
	db     *pebble.DB
	logger *slog.Logger
	sync   bool // !Options.NoSync
	bg     *backgroundErrors

	// closeMu is held for reading by every call for its whole duration, and
	// for writing by Close, so that Close waits for calls in progress and no
	// call reaches a closed Pebble database (which panics).
	closeMu sync.RWMutex
	closed  bool // guarded by closeMu

	// failed is set once, by the first failed write; see ErrFailed.
	failed atomic.Pointer[error]

	// appendMu serializes Append's allocation of ids and seqs and its write
	// to Pebble's log, but not its wait for the sync.
	appendMu sync.Mutex
	lastID   uint64 // guarded by appendMu

	// seqMu guards the cache of conversations' sequence state: the map
	// convs, by app 0x00 conv, and the same entries in convRing, which the
	// evictor's hand (convHand) sweeps; not the entries themselves (see
	// convSeq). It holds at most about maxConvs entries (static after
	// Open); see appendConv and evictConv.
	seqMu    sync.RWMutex
	convs    map[string]*convSeq
	convRing []*convSeq
	convHand int
	maxConvs int

	// pruneMu serializes PruneDedup calls; see prune.go.
	pruneMu sync.Mutex

	// groupMu serializes the read-modify-write of groups and memberships.
	groupMu sync.Mutex

	// pushMu serializes the read-modify-writes of outbox jobs (ClaimPush,
	// RetryPush, FinishPush): each holds it while it reads and applies its
	// batch, not while it waits for the sync. Append adds jobs without it;
	// their ids are new.
	pushMu sync.Mutex
	// pushJobs is the number of outbox jobs: counted by Open, then raised
	// by Append and lowered by FinishPush once their batches are applied.
	pushJobs atomic.Int64

	// floorMu guards pushFloor, at or below the Next of every due index
	// entry (0 after Open), from which ClaimPush starts reading: a queue
	// in an LSM leaves a deletion behind for every entry it moves or
	// removes, and without the floor every claim would step over all of
	// them that compactions have not dropped yet (9 ms after 200,000
	// jobs). Every writer of an entry lowers the floor to its Next once
	// its batch is applied; ClaimPush raises it past what it read, and
	// takes into account pushSince, the lowest Next written since it read
	// the floor. See claimBatch.
	floorMu   sync.Mutex
	pushFloor uint64
	pushSince uint64

	// ackMu serializes SetAcked's read-compare-write, striped by cursor key
	// hashed with ackSeed (static after Open).
	ackMu   [16]sync.Mutex
	ackSeed maphash.Seed

	// readMu serializes SetRead's read-compare-write of a user's read
	// cursors of one conversation (P "r" and P "rs"), striped by the "r"
	// key hashed with ackSeed. Append does not take it: it writes only the
	// "ro" keys, which SetRead only reads (see keys.go).
	readMu [16]sync.Mutex
}

var _ store.Store = (*Store)(nil)

// Open opens the store in dir, creating it if needed. Only one Store may use
// a directory at a time. It is OpenContext without a way to give up.
func Open(dir string, opts Options) (*Store, error) {
	return OpenContext(context.Background(), dir, opts)
}

// OpenContext opens the store in dir, creating it (owner-only) if needed.
// Only one Store may use a directory at a time.
//
// Opening replays Pebble's log and flushes it. OpenContext gives up, with
// the error, when that flush fails (a full or read-only disk: Pebble would
// retry for ever), and gives up with ctx's error when ctx ends first. In
// both cases Pebble's opening goroutine is left behind, parked or finishing
// on its own, and the directory stays locked until the process exits: the
// caller is expected to exit.
//
// On the first Open of a data directory written before dedup entries had a
// time index, OpenContext writes the index (see backfillDedupIndex), which
// reads every deduplicated message once; ctx ending stops it between two
// batches, and the next Open starts it again.
func OpenContext(ctx context.Context, dir string, opts Options) (*Store, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.FS == nil {
		opts.FS = ownerOnlyFS{vfs.Default}
	}
	bg := newBackgroundErrors(logger.With("component", "pebble"))
	type opened struct {
		db  *pebble.DB
		err error
	}
	done := make(chan opened, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				f, ok := r.(fatalError)
				if !ok {
					panic(r)
				}
				done <- opened{err: f}
			}
		}()
		db, err := pebble.Open(dir, pebbleOptions(opts, logger, bg))
		done <- opened{db, err}
	}()
	var db *pebble.DB
	select {
	case o := <-done:
		if o.err != nil {
			return nil, fmt.Errorf("pebblestore: open %s: %w", dir, o.err)
		}
		db = o.db
	case <-bg.failed:
		return nil, fmt.Errorf("pebblestore: open %s: %w", dir, bg.openError())
	case <-ctx.Done():
		go func() {
			// Close the database if Open still succeeds.
			if o := <-done; o.db != nil {
				bg.openSucceeded()
				o.db.Close()
			}
		}()
		return nil, fmt.Errorf("pebblestore: open %s: %w", dir, context.Cause(ctx))
	}
	bg.openSucceeded()
	s := &Store{
		db:       db,
		logger:   logger,
		sync:     !opts.NoSync,
		bg:       bg,
		convs:    make(map[string]*convSeq),
		maxConvs: cmp.Or(max(opts.MaxCachedConvs, 0), defaultMaxCachedConvs),
		ackSeed:  maphash.MakeSeed(),
	}
	last, err := s.getU64(metaLastIDKey)
	if err == nil {
		err = s.backfillDedupIndex(ctx)
	}
	if err == nil {
		err = s.countPushJobs()
	}
	if err != nil {
		bg.close()
		db.Close()
		return nil, fmt.Errorf("pebblestore: open %s: %w", dir, err)
	}
	s.lastID = max(last, uint64(time.Now().UnixMilli())<<16)
	return s, nil
}

// pebbleOptions returns the Pebble configuration of a Store.
func pebbleOptions(opts Options, logger *slog.Logger, bg *backgroundErrors) *pebble.Options {
	pl := pebbleLogger{logger.With("component", "pebble")}
	po := &pebble.Options{
		FS:                 opts.FS,
		Logger:             pl,
		EventListener:      bg.listener(pl),
		FormatMajorVersion: pebble.FormatNewest,
		CacheSize:          opts.CacheSize,
	}
	if po.CacheSize == 0 {
		// Every Append looks up each client message id, and nearly all
		// miss: what they read is the sstables' bloom filters, and with
		// 64 MiB those were evicted and read again from disk. 256 MiB took
		// 11% off the server's CPU per durable message (A/B, qim bench
		// pair --offline); it fills only as blocks are read.
		po.CacheSize = 256 << 20
	}
	// A server writes a stream of small keys. With Pebble's default 4 MiB
	// memtable, flushes and L0 compactions took a third of the server's CPU
	// under `qim bench pair --offline`; 64 MiB took 15% off the CPU per
	// message (docs/BENCHMARKS.md).
	po.MemTableSize = 64 << 20
	// Append looks up every ClientMsgId, and most are new: bloom filters
	// answer those misses without reading data blocks.
	for i := range po.Levels {
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	return po
}

// Close closes the database; with NoSync off every write is already synced,
// and Close syncs the last acknowledgements (SetAcked). Calls after Close
// return store.ErrClosed. Close waits for calls in progress.
func (s *Store) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return store.ErrClosed
	}
	s.closed = true
	s.bg.close()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("pebblestore: close: %w", err)
	}
	return nil
}

// enter starts a call: it returns store.ErrClosed after Close, the failure
// after a failed write (see ErrFailed), and otherwise holds closeMu for
// reading until exit.
func (s *Store) enter() error {
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return store.ErrClosed
	}
	if err := s.failure(); err != nil {
		s.closeMu.RUnlock()
		return err
	}
	return nil
}

func (s *Store) exit() { s.closeMu.RUnlock() }

func (s *Store) failure() error {
	if p := s.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// fail records that a write failed and returns err wrapped with ErrFailed.
func (s *Store) fail(err error) error {
	err = fmt.Errorf("%w: %w", ErrFailed, err)
	if s.failed.CompareAndSwap(nil, &err) {
		s.logger.Error("pebblestore: write failed; refusing further calls until reopened", "err", err)
	}
	return err
}

// write commits b, synced unless sync is false or Options.NoSync is set,
// and closes it.
func (s *Store) write(b *pebble.Batch, sync bool) error {
	if err := s.apply(b, sync); err != nil {
		return err
	}
	return s.wait(b, sync)
}

// apply writes b to Pebble's log and memtable without waiting for the sync.
// A sync write must be followed by wait.
func (s *Store) apply(b *pebble.Batch, sync bool) (err error) {
	if err := s.failure(); err != nil {
		return err
	}
	// Pebble reports an error in its commit pipeline by calling
	// Logger.Fatalf and, if that returns, returning nil from Apply; the
	// pebbleLogger panics instead, and the panic is an error here.
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(fatalError)
			if !ok {
				panic(r)
			}
			err = s.fail(f)
		}
	}()
	if sync && s.sync {
		// The sync error comes from Batch.SyncWait rather than through
		// Logger.Fatalf.
		err = s.db.ApplyNoSyncWait(b, pebble.Sync)
	} else {
		err = s.db.Apply(b, pebble.NoSync)
	}
	if err != nil {
		return s.fail(err)
	}
	return nil
}

// wait waits until b, applied by apply, is synced, and closes it.
func (s *Store) wait(b *pebble.Batch, sync bool) error {
	if sync && s.sync {
		if err := b.SyncWait(); err != nil {
			return s.fail(err)
		}
	}
	return b.Close()
}

// get returns a copy of the value of key, or store.ErrNotFound.
func (s *Store) get(key []byte) ([]byte, error) {
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	v = append([]byte(nil), v...)
	return v, closer.Close()
}

// has reports whether key exists.
func (s *Store) has(key []byte) (bool, error) {
	_, err := s.get(key)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// getU64 returns the integer stored at key, or 0 if there is none.
func (s *Store) getU64(key []byte) (uint64, error) {
	v, err := s.get(key)
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return decodeU64(v)
}

// scan calls fn with the rest of the key after prefix and the value of every
// key starting with prefix, in key order. prefix must end in a separator.
// The slices are valid only during the call.
func (s *Store) scan(prefix []byte, fn func(rest, value []byte) error) error {
	return s.scanRange(prefix, prefixEnd(prefix), len(prefix), fn)
}

func (s *Store) scanRange(lower, upper []byte, skip int, fn func(rest, value []byte) error) (err error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	for it.First(); it.Valid(); it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		if err := fn(it.Key()[skip:], v); err != nil {
			return err
		}
	}
	return it.Error()
}

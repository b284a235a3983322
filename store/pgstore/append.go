package pgstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/protobuf/proto"

	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// maxAppendAttempts bounds how often Append starts its transaction again
// after losing a race for a client message id (errDedupRace). Each retry
// sees the winner's entry, so a second attempt nearly always succeeds.
const maxAppendAttempts = 4

// errDedupRace is an attempt's failure to insert a de-duplication entry
// that another transaction committed after this one looked it up.
var errDedupRace = errors.New("pgstore: client message id stored concurrently")

// Append implements store.Store, in one transaction:
//
//  1. One round trip (a pipelined pgx.Batch): BEGIN; look up the client
//     message ids in dedup; bump the last seq of every conversation by its
//     number of new messages, in sorted order (the row locks serialize
//     Appends to one conversation, across processes); take ids from the
//     message_ids sequence.
//  2. Messages whose id was found are duplicates; if there were any, the
//     last seqs are lowered again, under the locks already held.
//  3. A second round trip: insert the messages, their dedup entries (in
//     sorted order), the senders' read cursors (moved forward to their
//     last message of each conversation: their own messages are read)
//     and, for a conversation's first message, its members' inbox rows;
//     COMMIT.
//
// If another transaction committed one of the client message ids between
// steps 1 and 3, the insert into dedup fails, the transaction is rolled
// back and Append starts again; the new attempt finds the original.
//
// It sets Id, Seq and Timestamp of the given messages that are not
// duplicates, and restores them if it fails.
func (s *Store) Append(ctx context.Context, msgs []store.Append) ([]store.AppendResult, error) {
	ctx, cancel, err := s.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer cancel()
	if len(msgs) == 0 {
		return nil, nil
	}
	for _, a := range msgs {
		if err := checkAppend(a); err != nil {
			return nil, fmt.Errorf("pgstore: append: %w", err)
		}
	}
	op := newAppendOp(msgs)
	for attempt := 1; ; attempt++ {
		err := s.appendOnce(ctx, op)
		if err == nil {
			return op.results, nil
		}
		op.undo()
		if !errors.Is(err, errDedupRace) || attempt == maxAppendAttempts {
			return nil, s.fail("append", err)
		}
		s.dedupRetries.Add(1)
	}
}

func checkAppend(a store.Append) error {
	if a.Msg == nil {
		return errors.New("nil message")
	}
	if err := checkIDs(a.App, a.Conv, a.Msg.FromUser); err != nil {
		return err
	}
	return checkIDs(a.Members...)
}

// dedupKey is the scope of a client message id.
type dedupKey struct{ app, user, clientMsgID string }

func compareDedupKeys(a, b dedupKey) int {
	return cmp.Or(strings.Compare(a.app, b.app), strings.Compare(a.user, b.user), strings.Compare(a.clientMsgID, b.clientMsgID))
}

// convKey is a conversation of an app.
type convKey struct{ app, conv string }

func compareConvKeys(a, b convKey) int {
	return cmp.Or(strings.Compare(a.app, b.app), strings.Compare(a.conv, b.conv))
}

// appendOp is one Append: its messages and what the attempts share.
type appendOp struct {
	msgs    []store.Append
	results []store.AppendResult
	// firstOf[i] is the index of the earlier message of the call with the
	// same client message id, or -1.
	firstOf []int
	// saved holds the fields Append sets, to restore them on failure.
	saved []savedMsg
}

type savedMsg struct {
	id, seq   uint64
	timestamp int64
}

func newAppendOp(msgs []store.Append) *appendOp {
	op := &appendOp{
		msgs:    msgs,
		results: make([]store.AppendResult, len(msgs)),
		firstOf: make([]int, len(msgs)),
		saved:   make([]savedMsg, len(msgs)),
	}
	seen := make(map[dedupKey]int, len(msgs))
	for i, a := range msgs {
		m := a.Msg
		op.saved[i] = savedMsg{m.Id, m.Seq, m.Timestamp}
		op.firstOf[i] = -1
		if m.ClientMsgId == "" {
			continue
		}
		k := dedupKey{a.App, m.FromUser, m.ClientMsgId}
		if j, ok := seen[k]; ok {
			op.firstOf[i] = j
		} else {
			seen[k] = i
		}
	}
	return op
}

// undo restores the messages as they were given.
func (op *appendOp) undo() {
	for i, a := range op.msgs {
		sv := op.saved[i]
		a.Msg.Id, a.Msg.Seq, a.Msg.Timestamp = sv.id, sv.seq, sv.timestamp
	}
	clear(op.results)
}

// appendOnce runs one attempt of op in a transaction of its own, and fills
// op.results if it commits.
func (s *Store) appendOnce(ctx context.Context, op *appendOp) (err error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	inTx := false
	defer func() {
		if inTx {
			rollback(conn)
		}
		conn.Release()
	}()

	// The candidates: every first occurrence of a client message id, and
	// every message without one.
	var cands []int
	var lookup []int // candidates with a client message id
	counts := make(map[convKey]int64)
	for i, a := range op.msgs {
		if op.firstOf[i] >= 0 {
			continue
		}
		cands = append(cands, i)
		if a.Msg.ClientMsgId != "" {
			lookup = append(lookup, i)
		}
		counts[convKey{a.App, a.Conv}]++
	}
	convs := make([]convKey, 0, len(counts))
	for k := range counts {
		convs = append(convs, k)
	}
	slices.SortFunc(convs, compareConvKeys)

	// Round trip 1.
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	if len(lookup) > 0 {
		apps, users, ids := make([]string, len(lookup)), make([]string, len(lookup)), make([][]byte, len(lookup))
		for j, i := range lookup {
			m := op.msgs[i].Msg
			apps[j], users[j], ids[j] = op.msgs[i].App, m.FromUser, []byte(m.ClientMsgId)
		}
		b.Queue(sqlLookupDedup, apps, users, ids)
	}
	{
		apps, names, ns := make([]string, len(convs)), make([]string, len(convs)), make([]int64, len(convs))
		for j, k := range convs {
			apps[j], names[j], ns[j] = k.app, k.conv, counts[k]
		}
		b.Queue(sqlBumpConvs, apps, names, ns)
	}
	b.Queue(sqlNextIDs, len(cands))
	inTx = true
	br := conn.SendBatch(ctx, b)
	originals, last, ids, err := readAllocation(br, op, lookup)
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	base := make(map[convKey]uint64, len(convs)) // last seq before this call
	for _, k := range convs {
		l, ok := last[k]
		if !ok || l < counts[k] {
			return fmt.Errorf("conversation %s: last seq %d (found %t) after adding %d", k.conv, l, ok, counts[k])
		}
		base[k] = uint64(l - counts[k])
	}

	// Drop the duplicates found, and give back the seqs they were counted
	// for.
	newMsgs := cands
	if len(originals) > 0 {
		newMsgs = make([]int, 0, len(cands)-len(originals))
		for _, i := range cands {
			if orig := originals[i]; orig != nil {
				op.results[i] = store.AppendResult{Msg: orig, Duplicate: true}
				continue
			}
			newMsgs = append(newMsgs, i)
		}
	}
	if len(newMsgs) == 0 {
		// Nothing to write; the originals found are committed.
		op.fillWithinCall()
		return nil
	}

	// Number the new messages, in slice order per conversation.
	now := time.Now().UnixMilli()
	next := make(map[convKey]uint64, len(convs))
	for _, k := range convs {
		next[k] = base[k] + 1
	}
	slices.Sort(ids)
	w := newAppendWrites(len(newMsgs))
	for j, i := range newMsgs {
		a := op.msgs[i]
		m := a.Msg
		k := convKey{a.App, a.Conv}
		m.Id, m.Seq, m.Timestamp = uint64(ids[j]), next[k], now
		next[k]++
		v, err := proto.Marshal(m)
		if err != nil {
			return fmt.Errorf("marshal message: %w", err)
		}
		w.message(a, v)
		op.results[i] = store.AppendResult{Msg: m}
	}

	// Round trip 2.
	b = &pgx.Batch{}
	if len(originals) > 0 {
		var apps, names []string
		var lasts []int64
		for _, k := range convs {
			if want := int64(next[k] - 1); want != last[k] {
				apps, names, lasts = append(apps, k.app), append(names, k.conv), append(lasts, want)
			}
		}
		if len(apps) > 0 {
			b.Queue(sqlSetConvs, apps, names, lasts)
		}
	}
	w.queue(b)
	b.Queue("COMMIT")
	br = conn.SendBatch(ctx, b)
	err = execAll(br, b.Len())
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "dedup_pkey" {
			return fmt.Errorf("%w: %w", errDedupRace, err)
		}
		return err
	}
	inTx = false
	op.fillWithinCall()
	return nil
}

// readAllocation reads the results of round trip 1: the originals of
// client message ids found (by message index), the new last seq of each
// conversation and the message ids taken.
func readAllocation(br pgx.BatchResults, op *appendOp, lookup []int) (originals map[int]*qimpb.Message, last map[convKey]int64, ids []int64, err error) {
	if _, err := br.Exec(); err != nil {
		return nil, nil, nil, err
	}
	if len(lookup) > 0 {
		rows, err := br.Query()
		if err != nil {
			return nil, nil, nil, err
		}
		var pos int
		var v []byte
		_, err = pgx.ForEachRow(rows, []any{&pos, &v}, func() error {
			if pos < 1 || pos > len(lookup) {
				return fmt.Errorf("dedup lookup: position %d out of range", pos)
			}
			m := new(qimpb.Message)
			if err := proto.Unmarshal(v, m); err != nil {
				return fmt.Errorf("unmarshal message: %w", err)
			}
			if originals == nil {
				originals = make(map[int]*qimpb.Message)
			}
			originals[lookup[pos-1]] = m
			return nil
		})
		if err != nil {
			return nil, nil, nil, err
		}
	}
	rows, err := br.Query()
	if err != nil {
		return nil, nil, nil, err
	}
	last = make(map[convKey]int64)
	var k convKey
	var seq int64
	_, err = pgx.ForEachRow(rows, []any{&k.app, &k.conv, &seq}, func() error {
		last[k] = seq
		return nil
	})
	if err != nil {
		return nil, nil, nil, err
	}
	rows, err = br.Query()
	if err != nil {
		return nil, nil, nil, err
	}
	ids, err = pgx.CollectRows(rows, pgx.RowTo[int64])
	return originals, last, ids, err
}

// fillWithinCall sets the results of the messages that repeat an earlier
// message's client message id within the call, once the earlier ones are
// set.
func (op *appendOp) fillWithinCall() {
	for i, j := range op.firstOf {
		if j >= 0 {
			op.results[i] = store.AppendResult{Msg: proto.CloneOf(op.results[j].Msg), Duplicate: true}
		}
	}
}

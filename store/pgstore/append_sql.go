package pgstore

import (
	"cmp"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/qim-im/qim/store"
)

// The statements of Append. Arrays are passed whole (unnest), so that the
// number of round trips does not grow with the number of messages.
const (
	// sqlLookupDedup returns the stored originals of client message ids,
	// by the 1-based position of the id in the arrays. The LIMIT 1 keeps
	// the lookups LATERAL: one index probe per id. As a plain join, the
	// plan chosen while the table was small (a hash join over a sequential
	// scan of dedup) stayed cached as the table grew, and Append slowed
	// down with the size of the index it looks up.
	sqlLookupDedup = `SELECT k.i, m.msg
FROM unnest($1::text[], $2::text[], $3::bytea[]) WITH ORDINALITY AS k(app, from_user, client_msg_id, i)
CROSS JOIN LATERAL (
	SELECT d.conv, d.seq FROM dedup d
	WHERE d.app = k.app AND d.from_user = k.from_user AND d.client_msg_id = k.client_msg_id LIMIT 1
) AS d
CROSS JOIN LATERAL (
	SELECT m.msg FROM messages m WHERE m.app = k.app AND m.conv = d.conv AND m.seq = d.seq LIMIT 1
) AS m`

	// sqlBumpConvs adds n to the last seq of each conversation, creating
	// missing ones, and returns the new last seqs. Rows are locked in the
	// order of the arrays, which Append sorts, so that two Appends never
	// wait for each other's locks in a cycle.
	sqlBumpConvs = `INSERT INTO convs AS c (app, conv, last_seq)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
ON CONFLICT (app, conv) DO UPDATE SET last_seq = c.last_seq + excluded.last_seq
RETURNING app, conv, last_seq`

	// sqlSetConvs sets the last seq of conversations whose rows the
	// transaction has created or locked (sqlBumpConvs). An upsert rather
	// than an UPDATE ... FROM, so that the rows are found through the
	// primary key whatever plan is cached.
	sqlSetConvs = `INSERT INTO convs (app, conv, last_seq)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
ON CONFLICT (app, conv) DO UPDATE SET last_seq = excluded.last_seq`

	sqlNextIDs = `SELECT nextval('message_ids') FROM generate_series(1, $1::int)`

	sqlInsertMessages = `INSERT INTO messages (app, conv, seq, msg)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bytea[])`

	// sqlInsertDedup inserts entries in the order of the arrays, which
	// Append sorts. A plain INSERT: an entry that another transaction
	// inserted waits for it, then fails with a unique violation if it
	// committed (errDedupRace).
	sqlInsertDedup = `INSERT INTO dedup (app, from_user, client_msg_id, conv, seq, created)
SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::bigint[], $6::bigint[])`

	sqlInsertInbox = `INSERT INTO inbox (app, user_id, conv)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
ON CONFLICT DO NOTHING`

	// sqlAdvanceReads moves the senders' read cursors of their
	// conversations to their last new message, forward only. The rows
	// are distinct and sorted; each row's conversation is one whose convs
	// row the transaction holds locked, so two Appends never wait for each
	// other's read rows in a cycle.
	sqlAdvanceReads = `INSERT INTO reads AS r (app, user_id, conv, read_seq)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
ON CONFLICT (app, user_id, conv) DO UPDATE SET read_seq = GREATEST(r.read_seq, excluded.read_seq)`

	// sqlInsertPush adds the outbox jobs of messages with a PushAt, each
	// under its message's id, with users NULL and no attempts.
	sqlInsertPush = `INSERT INTO push_outbox (id, app, conv, seq, next)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bigint[])`
)

// appendWrites collects the rows of round trip 2 as column arrays.
type appendWrites struct {
	mApp, mConv []string
	mSeq        []int64
	mMsg        [][]byte

	dedup []dedupRow

	iApp, iUser, iConv []string

	pID, pSeq, pNext []int64
	pApp, pConv      []string

	// reads holds each sender's last new message per conversation.
	reads map[readKey]int64
}

// readKey is a user's read cursor of a conversation.
type readKey struct{ app, user, conv string }

type dedupRow struct {
	key     dedupKey
	conv    string
	seq     int64
	created int64
}

func newAppendWrites(n int) *appendWrites {
	return &appendWrites{
		mApp: make([]string, 0, n), mConv: make([]string, 0, n),
		mSeq: make([]int64, 0, n), mMsg: make([][]byte, 0, n),
		dedup: make([]dedupRow, 0, n),
		reads: make(map[readKey]int64),
	}
}

// message adds a numbered message, marshalled as v, its dedup entry, its
// outbox job if it has a PushAt, its sender's read cursor and, if it is its
// conversation's first, its members' inbox rows. Inbox rows are never
// deleted and a 1:1 conversation's members never change, so the first
// message is enough. Messages of one conversation come in seq order.
func (w *appendWrites) message(a store.Append, v []byte) {
	m := a.Msg
	w.reads[readKey{a.App, m.FromUser, a.Conv}] = int64(m.Seq)
	w.mApp, w.mConv = append(w.mApp, a.App), append(w.mConv, a.Conv)
	w.mSeq, w.mMsg = append(w.mSeq, int64(m.Seq)), append(w.mMsg, v)
	if m.ClientMsgId != "" {
		w.dedup = append(w.dedup, dedupRow{dedupKey{a.App, m.FromUser, m.ClientMsgId}, a.Conv, int64(m.Seq), m.Timestamp})
	}
	if !a.PushAt.IsZero() {
		w.pID, w.pApp, w.pConv = append(w.pID, int64(m.Id)), append(w.pApp, a.App), append(w.pConv, a.Conv)
		w.pSeq, w.pNext = append(w.pSeq, int64(m.Seq)), append(w.pNext, a.PushAt.UnixMilli())
	}
	if m.Seq == 1 {
		for _, u := range a.Members {
			w.iApp, w.iUser, w.iConv = append(w.iApp, a.App), append(w.iUser, u), append(w.iConv, a.Conv)
		}
	}
}

// queue adds the inserts to b.
func (w *appendWrites) queue(b *pgx.Batch) {
	b.Queue(sqlInsertMessages, w.mApp, w.mConv, w.mSeq, w.mMsg)
	if n := len(w.dedup); n > 0 {
		slices.SortFunc(w.dedup, func(x, y dedupRow) int { return compareDedupKeys(x.key, y.key) })
		apps, users, ids := make([]string, n), make([]string, n), make([][]byte, n)
		convs, seqs, created := make([]string, n), make([]int64, n), make([]int64, n)
		for j, d := range w.dedup {
			apps[j], users[j], ids[j] = d.key.app, d.key.user, []byte(d.key.clientMsgID)
			convs[j], seqs[j], created[j] = d.conv, d.seq, d.created
		}
		b.Queue(sqlInsertDedup, apps, users, ids, convs, seqs, created)
	}
	if len(w.iApp) > 0 {
		b.Queue(sqlInsertInbox, w.iApp, w.iUser, w.iConv)
	}
	if n := len(w.reads); n > 0 {
		keys := make([]readKey, 0, n)
		for k := range w.reads {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(x, y readKey) int {
			return cmp.Or(strings.Compare(x.app, y.app), strings.Compare(x.user, y.user), strings.Compare(x.conv, y.conv))
		})
		apps, users, convs, seqs := make([]string, n), make([]string, n), make([]string, n), make([]int64, n)
		for j, k := range keys {
			apps[j], users[j], convs[j], seqs[j] = k.app, k.user, k.conv, w.reads[k]
		}
		b.Queue(sqlAdvanceReads, apps, users, convs, seqs)
	}
	if len(w.pID) > 0 {
		b.Queue(sqlInsertPush, w.pID, w.pApp, w.pConv, w.pSeq, w.pNext)
	}
}

package pgstore

import (
	"context"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/qim-im/qim/store"
)

// sqlInbox lists the 1:1 conversations of a user that have messages, and
// the groups the user is a member of (a closed group has none), with the
// device's cursor and the user's read cursor. A group's cursor is never
// below the member's join point, so a user who left and joined again is
// not given the messages sent while away. For a 1:1 conversation with
// someone else (peer: the other user of 'u:<a>:<b>', NULL for oneself),
// it adds the peer's furthest device cursor and shared read cursor.
// Conversations, cursors and read cursors are looked up by correlated
// subqueries, each an index probe per row of the user's, whatever plan is
// cached.
const sqlInbox = `SELECT conv, last_seq, acked, read_seq,
	COALESCE((SELECT max(k.acked) FROM cursors k WHERE k.app = $1 AND k.conv = direct.conv AND k.user_id = direct.peer), 0),
	COALESCE((SELECT r.shared_seq FROM reads r WHERE r.app = $1 AND r.user_id = direct.peer AND r.conv = direct.conv), 0)
FROM (
	SELECT i.conv,
		CASE WHEN i.conv ~ '^u:[^:]*:[^:]*$' THEN
			CASE $2::text
			WHEN split_part(i.conv, ':', 2) THEN NULLIF(split_part(i.conv, ':', 3), $2::text)
			WHEN split_part(i.conv, ':', 3) THEN NULLIF(split_part(i.conv, ':', 2), $2::text)
			END
		END AS peer,
		COALESCE((SELECT c.last_seq FROM convs c WHERE c.app = i.app AND c.conv = i.conv), 0) AS last_seq,
		COALESCE((SELECT k.acked FROM cursors k
			WHERE k.app = i.app AND k.user_id = i.user_id AND k.device = $3 AND k.conv = i.conv), 0) AS acked,
		COALESCE((SELECT r.read_seq FROM reads r
			WHERE r.app = i.app AND r.user_id = i.user_id AND r.conv = i.conv), 0) AS read_seq
	FROM inbox i WHERE i.app = $1 AND i.user_id = $2
) AS direct WHERE last_seq > 0
UNION ALL
SELECT g.conv,
	COALESCE((SELECT c.last_seq FROM convs c WHERE c.app = g.app AND c.conv = g.conv), 0),
	GREATEST(g.join_seq, COALESCE((SELECT k.acked FROM cursors k
		WHERE k.app = g.app AND k.user_id = g.user_id AND k.device = $3 AND k.conv = g.conv), 0)),
	COALESCE((SELECT r.read_seq FROM reads r WHERE r.app = g.app AND r.user_id = g.user_id AND r.conv = g.conv), 0),
	0, 0
FROM (SELECT app, user_id, 'g:' || group_id AS conv, join_seq FROM group_members WHERE app = $1 AND user_id = $2) AS g`

// Inbox implements store.Store, in one query (sqlInbox). Conversations are
// sorted by key.
func (s *Store) Inbox(ctx context.Context, app, user, device string) ([]store.ConvState, error) {
	ctx, cancel, err := s.enter(ctx, app, user, device)
	if err != nil {
		return nil, err
	}
	defer cancel()
	rows, err := s.pool.Query(ctx, sqlInbox, app, user, device)
	if err != nil {
		return nil, s.fail("inbox", err)
	}
	var out []store.ConvState
	var c store.ConvState
	var last, acked, read, peerDelivered, peerRead int64
	_, err = pgx.ForEachRow(rows, []any{&c.Conv, &last, &acked, &read, &peerDelivered, &peerRead}, func() error {
		c.LastSeq, c.Acked, c.Read = uint64(last), uint64(acked), uint64(read)
		c.PeerDelivered, c.PeerRead = uint64(peerDelivered), uint64(peerRead)
		out = append(out, c)
		return nil
	})
	if err != nil {
		return nil, s.fail("inbox", err)
	}
	slices.SortFunc(out, func(a, b store.ConvState) int { return strings.Compare(a.Conv, b.Conv) })
	return out, nil
}

// SetAcked implements store.Store. The cursor only moves forward
// (GREATEST). The commit is asynchronous (synchronous_commit off for its
// transaction): it is durable with the server's next WAL flush, within
// about three times wal_writer_delay, and a crash of the server before
// then may lose it, as the interface allows.
func (s *Store) SetAcked(ctx context.Context, app, user, device, conv string, seq uint64) error {
	ctx, cancel, err := s.enter(ctx, app, user, device, conv)
	if err != nil {
		return err
	}
	defer cancel()
	if seq == 0 {
		return nil // every cursor is at 0 or beyond
	}
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue("SET LOCAL synchronous_commit = off")
	b.Queue(`INSERT INTO cursors AS k (app, user_id, device, conv, acked) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (app, user_id, device, conv) DO UPDATE SET acked = GREATEST(k.acked, excluded.acked)`,
		app, user, device, conv, clampSeq(seq))
	b.Queue("COMMIT")
	return s.fail("set acked", s.sendBatchTx(ctx, b))
}

// sendBatchTx sends b, a batch of statements without rows that begins and
// commits a transaction, on a connection of its own, and rolls the
// transaction back if a statement fails.
func (s *Store) sendBatchTx(ctx context.Context, b *pgx.Batch) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	br := conn.SendBatch(ctx, b)
	err = execAll(br, b.Len())
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil && conn.Conn().PgConn().TxStatus() != 'I' {
		rollback(conn)
	}
	return err
}

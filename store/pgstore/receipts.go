package pgstore

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/qim-im/qim/store"
)

// Read cursors, receipts and settings live in the tables reads and prefs
// (migrations/0003); Append moves the senders' read cursors in the
// transaction of their messages (sqlAdvanceReads).

// sqlSetRead moves a user's read cursor of a conversation, and its shared
// one if $5, forward only, in one statement, and returns both.
const sqlSetRead = `INSERT INTO reads AS r (app, user_id, conv, read_seq, shared_seq)
VALUES ($1, $2, $3, $4::bigint, CASE WHEN $5::boolean THEN $4::bigint ELSE 0 END)
ON CONFLICT (app, user_id, conv) DO UPDATE SET
	read_seq = GREATEST(r.read_seq, excluded.read_seq),
	shared_seq = GREATEST(r.shared_seq, excluded.shared_seq)
RETURNING read_seq, shared_seq`

// sqlReceipts returns, for each user of the array $2 in its order, the
// furthest cursor of conv $3 among the user's devices and the user's
// shared read cursor of it: two index probes per user (cursors_by_conv and
// the primary key of reads), whatever plan is cached.
const sqlReceipts = `SELECT
	COALESCE((SELECT max(k.acked) FROM cursors k WHERE k.app = $1 AND k.conv = $3 AND k.user_id = u.user_id), 0),
	COALESCE((SELECT r.shared_seq FROM reads r WHERE r.app = $1 AND r.user_id = u.user_id AND r.conv = $3), 0)
FROM unnest($2::text[]) WITH ORDINALITY AS u(user_id, i)
ORDER BY u.i`

// sqlContactOf returns those of the users $2 whose contact list holds $3:
// one probe of contacts' primary key per user.
const sqlContactOf = `SELECT user_id FROM contacts
WHERE app = $1 AND user_id = ANY($2::text[]) AND contact = $3`

// SetRead implements store.Store with sqlSetRead, which commits
// synchronously. It writes a row version even when neither cursor moves.
func (s *Store) SetRead(ctx context.Context, app, user, conv string, seq uint64, share bool) (read, shared uint64, err error) {
	ctx, cancel, err := s.enter(ctx, app, user, conv)
	if err != nil {
		return 0, 0, err
	}
	defer cancel()
	var r, sh int64
	if err := s.pool.QueryRow(ctx, sqlSetRead, app, user, conv, clampSeq(seq), share).Scan(&r, &sh); err != nil {
		return 0, 0, s.fail("set read", err)
	}
	return uint64(r), uint64(sh), nil
}

// Receipts implements store.Store with sqlReceipts.
func (s *Store) Receipts(ctx context.Context, app, conv string, users []string) ([]store.Receipt, error) {
	ctx, cancel, err := s.enter(ctx, app, conv)
	if err != nil {
		return nil, err
	}
	defer cancel()
	if err := checkIDs(users...); err != nil {
		return nil, err
	}
	if len(users) == 0 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, sqlReceipts, app, users, conv)
	if err != nil {
		return nil, s.fail("receipts", err)
	}
	out := make([]store.Receipt, 0, len(users))
	var delivered, read int64
	_, err = pgx.ForEachRow(rows, []any{&delivered, &read}, func() error {
		if len(out) == len(users) {
			return errors.New("more rows than users")
		}
		out = append(out, store.Receipt{User: users[len(out)], Delivered: uint64(delivered), Read: uint64(read)})
		return nil
	})
	if err == nil && len(out) != len(users) {
		err = errors.New("fewer rows than users")
	}
	if err != nil {
		return nil, s.fail("receipts", err)
	}
	return out, nil
}

// Prefs implements store.Store.
func (s *Store) Prefs(ctx context.Context, app, user string) (store.Prefs, error) {
	ctx, cancel, err := s.enter(ctx, app, user)
	if err != nil {
		return store.Prefs{}, err
	}
	defer cancel()
	var p store.Prefs
	err = s.pool.QueryRow(ctx, `SELECT hide_read_receipts FROM prefs WHERE app = $1 AND user_id = $2`, app, user).
		Scan(&p.HideReadReceipts)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Prefs{}, nil
	}
	if err != nil {
		return store.Prefs{}, s.fail("prefs", err)
	}
	return p, nil
}

// SetPrefs implements store.Store, in one upsert.
func (s *Store) SetPrefs(ctx context.Context, app, user string, p store.Prefs) error {
	ctx, cancel, err := s.enter(ctx, app, user)
	if err != nil {
		return err
	}
	defer cancel()
	_, err = s.pool.Exec(ctx, `INSERT INTO prefs (app, user_id, hide_read_receipts) VALUES ($1, $2, $3)
ON CONFLICT (app, user_id) DO UPDATE SET hide_read_receipts = excluded.hide_read_receipts`,
		app, user, p.HideReadReceipts)
	return s.fail("set prefs", err)
}

// ContactOf implements store.Store with sqlContactOf, and puts the owners
// found back in the order given.
func (s *Store) ContactOf(ctx context.Context, app, contact string, owners []string) ([]string, error) {
	ctx, cancel, err := s.enter(ctx, app, contact)
	if err != nil {
		return nil, err
	}
	defer cancel()
	if err := checkIDs(owners...); err != nil {
		return nil, err
	}
	if len(owners) == 0 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, sqlContactOf, app, owners, contact)
	if err != nil {
		return nil, s.fail("contact of", err)
	}
	found := make(map[string]bool)
	var u string
	_, err = pgx.ForEachRow(rows, []any{&u}, func() error {
		found[u] = true
		return nil
	})
	if err != nil {
		return nil, s.fail("contact of", err)
	}
	var out []string
	for _, o := range owners {
		if found[o] {
			out = append(out, o)
		}
	}
	return out, nil
}

package pgstore

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/qim-im/qim/store"
)

// The offline-push outbox is the table push_outbox (migrations/0002),
// whose rows Append inserts in the transaction of their messages.

// sqlClaimPush locks up to $3 jobs due at $1 (next <= $1), earliest first,
// skipping rows that another transaction holds, and moves them to $2, in
// one statement (one transaction). SKIP LOCKED keeps concurrent claims,
// from this process or another, from waiting for each other; a row another
// claim moved and committed meanwhile is read again before it is locked,
// and dropped as no longer due. The row's old next is returned for the
// order of the result, which RETURNING does not keep.
const sqlClaimPush = `WITH due AS (
	SELECT id, next FROM push_outbox WHERE next <= $1
	ORDER BY next, id LIMIT $3
	FOR UPDATE SKIP LOCKED
)
UPDATE push_outbox o SET next = $2 FROM due WHERE o.id = due.id
RETURNING o.id, o.app, o.conv, o.seq, o.users, o.attempts, due.next`

// sqlDeliveredTo returns those of the users $2 of whom a device's cursor
// of conv $3 is at $4 or beyond; one index probe of cursors' primary key
// per user, reading the user's cursors.
const sqlDeliveredTo = `SELECT user_id FROM cursors
WHERE app = $1 AND user_id = ANY($2::text[]) AND conv = $3
GROUP BY user_id HAVING max(acked) >= $4`

// ClaimPush implements store.Store with sqlClaimPush, which commits
// synchronously before it returns. A job's row is inserted in its
// message's transaction, so a job is never claimed before its message is
// readable.
func (s *Store) ClaimPush(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]store.PushJob, error) {
	ctx, cancel, err := s.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer cancel()
	if limit <= 0 {
		return nil, nil
	}
	until := now.Add(lease).UnixMilli()
	rows, err := s.pool.Query(ctx, sqlClaimPush, now.UnixMilli(), until, limit)
	if err != nil {
		return nil, s.fail("claim push", err)
	}
	type claimed struct {
		job store.PushJob
		due int64
	}
	var out []claimed
	var c claimed
	var id, seq, due int64
	var attempts int32
	_, err = pgx.ForEachRow(rows, []any{&id, &c.job.App, &c.job.Conv, &seq, &c.job.Users, &attempts, &due}, func() error {
		c.job.ID, c.job.Seq, c.job.Attempts = uint64(id), uint64(seq), int(attempts)
		c.job.Next, c.due = time.UnixMilli(until), due
		out = append(out, c)
		c.job.Users = nil
		return nil
	})
	if err != nil {
		return nil, s.fail("claim push", err)
	}
	slices.SortFunc(out, func(a, b claimed) int { return cmp.Or(cmp.Compare(a.due, b.due), cmp.Compare(a.job.ID, b.job.ID)) })
	jobs := make([]store.PushJob, len(out))
	for i, c := range out {
		jobs[i] = c.job
	}
	return jobs, nil
}

// RetryPush implements store.Store, in one UPDATE.
func (s *Store) RetryPush(ctx context.Context, job store.PushJob) error {
	ctx, cancel, err := s.enter(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	users := job.Users
	if users == nil {
		users = []string{} // pgx sends a nil slice as NULL
	}
	_, err = s.pool.Exec(ctx, `UPDATE push_outbox SET users = $2, attempts = $3, next = $4 WHERE id = $1`,
		clampSeq(job.ID), users, job.Attempts, job.Next.UnixMilli())
	return s.fail("retry push", err)
}

// FinishPush implements store.Store, in one DELETE.
func (s *Store) FinishPush(ctx context.Context, id uint64) error {
	ctx, cancel, err := s.enter(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	_, err = s.pool.Exec(ctx, `DELETE FROM push_outbox WHERE id = $1`, clampSeq(id))
	return s.fail("finish push", err)
}

// PushBacklog implements store.Store by counting the rows of push_outbox
// (an index-only scan when the visibility map allows). A counter row would
// be one more row every Append of every process updates; the outbox holds
// the jobs of the last few seconds unless the gateway is down.
func (s *Store) PushBacklog(ctx context.Context) (int, error) {
	ctx, cancel, err := s.enter(ctx)
	if err != nil {
		return 0, err
	}
	defer cancel()
	var n int64
	err = s.pool.QueryRow(ctx, `SELECT count(*) FROM push_outbox`).Scan(&n)
	return int(n), s.fail("push backlog", err)
}

// DeliveredTo implements store.Store with sqlDeliveredTo, and puts the
// users found back in the order given.
func (s *Store) DeliveredTo(ctx context.Context, app, conv string, seq uint64, users []string) ([]string, error) {
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
	rows, err := s.pool.Query(ctx, sqlDeliveredTo, app, users, conv, clampSeq(seq))
	if err != nil {
		return nil, s.fail("delivered to", err)
	}
	found := make(map[string]bool)
	var u string
	_, err = pgx.ForEachRow(rows, []any{&u}, func() error {
		found[u] = true
		return nil
	})
	if err != nil {
		return nil, s.fail("delivered to", err)
	}
	var out []string
	for _, u := range users {
		if found[u] {
			out = append(out, u)
		}
	}
	return out, nil
}

package pgstore

import (
	"context"
	"errors"
	"github.com/jackc/pgx/v5"
	"time"
)

// NextEpoch implements store.Store, in one statement: the row lock of the
// upsert orders concurrent calls, and the commit is synchronous.
func (s *Store) NextEpoch(ctx context.Context, app, user, device string) (uint64, error) {
	ctx, cancel, err := s.enter(ctx, app, user, device)
	if err != nil {
		return 0, err
	}
	defer cancel()
	var epoch int64
	err = s.pool.QueryRow(ctx, `INSERT INTO epochs AS e (app, user_id, device, epoch) VALUES ($1, $2, $3, 1)
ON CONFLICT (app, user_id, device) DO UPDATE SET epoch = e.epoch + 1 RETURNING epoch`, app, user, device).Scan(&epoch)
	return uint64(epoch), s.fail("next epoch", err)
}

// Epoch implements store.Store.
func (s *Store) Epoch(ctx context.Context, app, user, device string) (uint64, error) {
	ctx, cancel, err := s.enter(ctx, app, user, device)
	if err != nil {
		return 0, err
	}
	defer cancel()
	var epoch int64
	err = s.pool.QueryRow(ctx, `SELECT epoch FROM epochs WHERE app = $1 AND user_id = $2 AND device = $3`, app, user, device).Scan(&epoch)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	return uint64(epoch), s.fail("epoch", err)
}

// PruneDedup implements store.Store. It deletes the entries whose message
// Timestamp is before t (index dedup_created), at most pruneChunk per
// statement, each statement its own transaction, so that no call holds a
// long transaction or many row locks; it stops at the first error, having
// committed the chunks before it, and returns how many it deleted. Each
// chunk is bounded by callTimeout on its own.
func (s *Store) PruneDedup(ctx context.Context, before time.Time) (int, error) {
	total := 0
	for {
		n, err := s.pruneChunkOnce(ctx, before.UnixMilli())
		total += n
		if err != nil || n < s.pruneChunk {
			return total, err
		}
	}
}

func (s *Store) pruneChunkOnce(ctx context.Context, before int64) (int, error) {
	ctx, cancel, err := s.enter(ctx)
	if err != nil {
		return 0, err
	}
	defer cancel()
	// The chunk's entries are found through dedup_created, then deleted by
	// ctid (a TID scan). Entries are never updated, and a tuple the
	// statement's snapshot sees cannot be vacuumed away under it, so a ctid
	// still names the entry found; one that a concurrent PruneDedup deleted
	// meanwhile is skipped. (Repeating "created < $1" on the DELETE would
	// make PostgreSQL scan every old entry through the index for each chunk.)
	tag, err := s.pool.Exec(ctx, `DELETE FROM dedup WHERE ctid = ANY(ARRAY(
	SELECT ctid FROM dedup WHERE created < $1 LIMIT $2
))`, before, s.pruneChunk)
	return int(tag.RowsAffected()), s.fail("prune dedup", err)
}

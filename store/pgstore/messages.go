package pgstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"

	qimpb "github.com/qim-im/qim/proto"
)

// Messages implements store.Store. A limit <= 0 returns no messages.
// Messages and their conversation's last seq commit together, and an
// Append waits for the previous one of the conversation to commit before
// it takes its seqs, so a reader never sees a gap.
func (s *Store) Messages(ctx context.Context, app, conv string, after uint64, limit int) ([]*qimpb.Message, error) {
	ctx, cancel, err := s.enter(ctx, app, conv)
	if err != nil {
		return nil, err
	}
	defer cancel()
	if limit <= 0 {
		return nil, nil
	}
	msgs, err := s.queryMessages(ctx, `SELECT msg FROM messages
WHERE app = $1 AND conv = $2 AND seq > $3 ORDER BY seq LIMIT $4`, app, conv, clampSeq(after), limit)
	return msgs, s.fail("messages", err)
}

// History implements store.Store. A limit <= 0 returns no messages.
func (s *Store) History(ctx context.Context, app, conv string, before uint64, limit int) ([]*qimpb.Message, error) {
	ctx, cancel, err := s.enter(ctx, app, conv)
	if err != nil {
		return nil, err
	}
	defer cancel()
	if limit <= 0 || before == 1 {
		return nil, nil
	}
	bound := clampSeq(before)
	if before == 0 {
		bound = maxSeq
	}
	msgs, err := s.queryMessages(ctx, `SELECT msg FROM (
	SELECT seq, msg FROM messages WHERE app = $1 AND conv = $2 AND seq < $3 ORDER BY seq DESC LIMIT $4
) AS page ORDER BY seq`, app, conv, bound, limit)
	return msgs, s.fail("history", err)
}

// LastSeq implements store.Store.
func (s *Store) LastSeq(ctx context.Context, app, conv string) (uint64, error) {
	ctx, cancel, err := s.enter(ctx, app, conv)
	if err != nil {
		return 0, err
	}
	defer cancel()
	var last int64
	err = s.pool.QueryRow(ctx, "SELECT last_seq FROM convs WHERE app = $1 AND conv = $2", app, conv).Scan(&last)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	return uint64(last), s.fail("last seq", err)
}

// queryMessages returns the messages selected by sql, a query of one
// column, msg.
func (s *Store) queryMessages(ctx context.Context, sql string, args ...any) ([]*qimpb.Message, error) {
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	var out []*qimpb.Message
	var v []byte
	_, err = pgx.ForEachRow(rows, []any{&v}, func() error {
		m := new(qimpb.Message)
		if err := proto.Unmarshal(v, m); err != nil {
			return fmt.Errorf("unmarshal message: %w", err)
		}
		out = append(out, m)
		return nil
	})
	return out, err
}

// maxSeq is the largest seq a bigint column holds.
const maxSeq = int64(^uint64(0) >> 1)

// clampSeq converts a seq bound to a bigint, clamping it to maxSeq.
func clampSeq(seq uint64) int64 { return int64(min(seq, uint64(maxSeq))) }

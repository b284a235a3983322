package bench

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// PGOptions shapes the PostgreSQL baseline.
type PGOptions struct {
	URL      string        // a database of its own (internal/pgdb)
	Convs    int           // conversations the batches spread over; 0 means 50
	Batch    int           // messages per transaction; 0 means 512, the committer's largest
	Size     int           // message bytes; 0 means 100
	Duration time.Duration // 0 means 3s
}

// PGResult is the PostgreSQL baseline's figure.
type PGResult struct {
	Msgs    int64
	Elapsed time.Duration
}

// Rate is messages committed per second.
func (r PGResult) Rate() float64 { return perSecond(r.Msgs, r.Elapsed) }

// PGBaseline measures what pair-durable-pg is bounded by: bare pgx doing
// the work of qim's PostgreSQL store for one committer batch, without qim
// around it. One transaction per batch, from one goroutine (as the
// committer calls the store): insert a de-duplication key per message,
// bump each conversation's last seq in sorted order, insert the messages,
// all pipelined in one pgx.Batch, then commit (synced).
func PGBaseline(ctx context.Context, o PGOptions) (PGResult, error) {
	o.Convs = cmp.Or(o.Convs, 50)
	o.Batch = cmp.Or(o.Batch, 512)
	o.Size = cmp.Or(o.Size, 100)
	o.Duration = cmp.Or(o.Duration, 3*time.Second)
	conn, err := pgx.Connect(ctx, o.URL)
	if err != nil {
		return PGResult{}, fmt.Errorf("bench: postgres baseline: %w", err)
	}
	defer conn.Close(context.Background())
	for _, q := range []string{
		`CREATE SCHEMA IF NOT EXISTS bench_base`,
		`DROP TABLE IF EXISTS bench_base.convs, bench_base.msgs, bench_base.dedup`,
		`CREATE TABLE bench_base.convs (conv text PRIMARY KEY, last_seq bigint NOT NULL)`,
		`CREATE TABLE bench_base.msgs (conv text, seq bigint, id bigint, body bytea, PRIMARY KEY (conv, seq))`,
		`CREATE TABLE bench_base.dedup (sender text, cid text, conv text, seq bigint, created timestamptz, PRIMARY KEY (sender, cid))`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return PGResult{}, fmt.Errorf("bench: postgres baseline: %w", err)
		}
	}
	convs := make([]string, o.Convs)
	for i := range convs {
		convs[i] = fmt.Sprintf("u:s%03d:r%03d", i, i)
	}
	slices.Sort(convs)
	body := make([]byte, o.Size)
	// Message i of every batch goes to conversation i % Convs, as the pairs
	// send; so every batch bumps the same conversations by the same counts.
	perConv := make([]int64, o.Convs)
	for i := range o.Batch {
		perConv[i%o.Convs]++
	}
	senders, cids, msgConvs := make([]string, o.Batch), make([]string, o.Batch), make([]string, o.Batch)
	seqs, bodies := make([]int64, o.Batch), make([][]byte, o.Batch)
	var msgs int64
	runCtx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()
	start := time.Now()
	for runCtx.Err() == nil {
		for i := range o.Batch {
			senders[i] = "s" + strconv.Itoa(i%o.Convs)
			cids[i] = strconv.FormatInt(msgs+int64(i), 10)
			msgConvs[i] = convs[i%o.Convs]
			seqs[i] = msgs + int64(i) + 1 // unique, and the message id too
			bodies[i] = body
		}
		b := &pgx.Batch{}
		b.Queue(`BEGIN`)
		b.Queue(`INSERT INTO bench_base.dedup SELECT s, c, v, q, now() FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) AS u(s, c, v, q) ON CONFLICT DO NOTHING`,
			senders, cids, msgConvs, seqs)
		for i, c := range convs {
			if n := perConv[i]; n > 0 {
				b.Queue(`INSERT INTO bench_base.convs VALUES ($1, $2) ON CONFLICT (conv) DO UPDATE SET last_seq = convs.last_seq + $2 RETURNING last_seq`, c, n)
			}
		}
		b.Queue(`INSERT INTO bench_base.msgs SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bytea[])`,
			msgConvs, seqs, seqs, bodies)
		b.Queue(`COMMIT`)
		if err := conn.SendBatch(runCtx, b).Close(); err != nil {
			if runCtx.Err() != nil {
				break
			}
			return PGResult{}, fmt.Errorf("bench: postgres baseline: %w", err)
		}
		msgs += int64(o.Batch)
	}
	return PGResult{Msgs: msgs, Elapsed: time.Since(start)}, nil
}

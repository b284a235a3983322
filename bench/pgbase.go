package bench

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// PGOptions shapes the PostgreSQL baseline.
type PGOptions struct {
	URL      string        // a database of its own (see CreateDatabase)
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
	var msgs, id int64
	runCtx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()
	start := time.Now()
	for runCtx.Err() == nil {
		// Messages spread evenly over the conversations, as the pairs send.
		per := make(map[string]int64, o.Convs)
		for i := range o.Batch {
			per[convs[i%o.Convs]]++
		}
		b := &pgx.Batch{}
		b.Queue(`BEGIN`)
		for i := range o.Batch {
			b.Queue(`INSERT INTO bench_base.dedup VALUES ($1, $2, $3, 0, now()) ON CONFLICT DO NOTHING`,
				"s"+strconv.Itoa(i%o.Convs), strconv.FormatInt(msgs+int64(i), 10), convs[i%o.Convs])
		}
		for _, c := range convs {
			if n := per[c]; n > 0 {
				b.Queue(`INSERT INTO bench_base.convs VALUES ($1, $2) ON CONFLICT (conv) DO UPDATE SET last_seq = convs.last_seq + $2 RETURNING last_seq`, c, n)
			}
		}
		rows := make([][]any, 0, o.Batch)
		for i := range o.Batch {
			id++
			rows = append(rows, []any{convs[i%o.Convs], msgs + int64(i) + 1, id, body})
		}
		b.Queue(`INSERT INTO bench_base.msgs SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bytea[])`,
			column[string](rows, 0), column[int64](rows, 1), column[int64](rows, 2), column[[]byte](rows, 3))
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

func column[T any](rows [][]any, i int) []T {
	out := make([]T, len(rows))
	for j, r := range rows {
		out[j] = r[i].(T)
	}
	return out
}

// CreateDatabase creates a new database on the PostgreSQL server of base
// (a postgres:// URL) and returns its URL and a func that drops it.
func CreateDatabase(ctx context.Context, base string) (string, func(), error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", nil, fmt.Errorf("bench: postgres URL: %w", err)
	}
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		return "", nil, fmt.Errorf("bench: postgres: %w", err)
	}
	defer conn.Close(context.Background())
	b := make([]byte, 6)
	rand.Read(b)
	name := "qimbench_" + hex.EncodeToString(b)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", nil, fmt.Errorf("bench: postgres: %w", err)
	}
	drop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, base); err == nil {
			c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			c.Close(ctx)
		}
	}
	u.Path = "/" + name
	return u.String(), drop, nil
}

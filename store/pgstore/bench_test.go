package pgstore

import (
	"cmp"
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/store"
)

// The shapes measured: one goroutine calling Append as the hub's committer
// does (a batch, or one message, at a time), and several goroutines on one
// Store.
var benchShapes = []struct {
	batch, goroutines int
}{
	{512, 1}, // the committer's largest batch, about its average under pair-durable-pg
	{64, 1},
	{1, 1},
	{64, 4},
}

const benchConvs = 16

// benchBatch returns batch messages of about 100 bytes spread over
// benchConvs conversations, with client message ids unique to prefix and
// call.
func benchBatch(prefix string, call, batch int) []store.Append {
	msgs := make([]store.Append, batch)
	for i := range msgs {
		c := (call*batch + i) % benchConvs
		from := fmt.Sprint("u", c)
		msgs[i] = store.Append{App: "org/app", Conv: store.DirectConv(from, "peer"), Members: []string{from, "peer"},
			Msg: testMessage(from, "peer", fmt.Sprintf("%s-%d-%d", prefix, call, i))}
	}
	return msgs
}

// runShape calls one b.N times in all, from goroutines goroutines, and
// reports messages per second.
func runShape(b *testing.B, batch, goroutines int, one func(call int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range goroutines {
		wg.Go(func() {
			for {
				call := int(next.Add(1)) - 1
				if call >= b.N {
					return
				}
				if err := one(call); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N*batch)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkAppendPG measures Store.Append.
//
//	go test -run '^$' -bench 'AppendPG|BarePGXBatch' -benchtime 5s ./store/pgstore/
func BenchmarkAppendPG(b *testing.B) {
	dbURL := testURL(b)
	for _, sh := range benchShapes {
		b.Run(fmt.Sprintf("batch=%d/goroutines=%d", sh.batch, sh.goroutines), func(b *testing.B) {
			s := openT(b, dbURL, newSchema(b, dbURL))
			defer s.Close()
			prefix := rand.Text()
			runShape(b, sh.batch, sh.goroutines, func(call int) error {
				_, err := s.Append(context.Background(), benchBatch(prefix, call, sh.batch))
				return err
			})
		})
	}
}

// BenchmarkAppendPushPG measures Store.Append as BenchmarkAppendPG does,
// every message with a PushAt: the cost of the outbox rows.
func BenchmarkAppendPushPG(b *testing.B) {
	dbURL := testURL(b)
	pushAt := time.Now()
	for _, sh := range benchShapes {
		b.Run(fmt.Sprintf("batch=%d/goroutines=%d", sh.batch, sh.goroutines), func(b *testing.B) {
			s := openT(b, dbURL, newSchema(b, dbURL))
			defer s.Close()
			prefix := rand.Text()
			runShape(b, sh.batch, sh.goroutines, func(call int) error {
				msgs := benchBatch(prefix, call, sh.batch)
				for i := range msgs {
					msgs[i].PushAt = pushAt
				}
				_, err := s.Append(context.Background(), msgs)
				return err
			})
		})
	}
}

// BenchmarkBarePGXBatch is the baseline of BenchmarkAppendPG: bare pgx
// doing the same shape of work without the store, one transaction per
// batch: bump each conversation's last seq in sorted order (a pgx.Batch of
// upserts), number and marshal the messages, insert them (a pgx.Batch of
// INSERTs), commit. It keeps no de-duplication index, takes ids from a
// counter in memory and writes no inbox rows.
func BenchmarkBarePGXBatch(b *testing.B) {
	dbURL := testURL(b)
	for _, sh := range benchShapes {
		b.Run(fmt.Sprintf("batch=%d/goroutines=%d", sh.batch, sh.goroutines), func(b *testing.B) {
			schema := newSchema(b, dbURL)
			cfg, err := pgxpool.ParseConfig(dbURL)
			if err != nil {
				b.Fatal(err)
			}
			cfg.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{schema}.Sanitize()
			pool, err := pgxpool.NewWithConfig(b.Context(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer pool.Close()
			for _, ddl := range []string{
				"CREATE SCHEMA " + pgx.Identifier{schema}.Sanitize(),
				`CREATE TABLE convs (app text COLLATE "C", conv text COLLATE "C", last_seq bigint NOT NULL, PRIMARY KEY (app, conv))`,
				`CREATE TABLE messages (app text COLLATE "C", conv text COLLATE "C", seq bigint, msg bytea NOT NULL, PRIMARY KEY (app, conv, seq))`,
			} {
				if _, err := pool.Exec(b.Context(), ddl); err != nil {
					b.Fatal(err)
				}
			}
			var lastID atomic.Uint64
			runShape(b, sh.batch, sh.goroutines, func(call int) error {
				return bareAppend(context.Background(), pool, benchBatch("", call, sh.batch), &lastID)
			})
		})
	}
}

func bareAppend(ctx context.Context, pool *pgxpool.Pool, msgs []store.Append, lastID *atomic.Uint64) error {
	counts := make(map[convKey]int64)
	for _, a := range msgs {
		counts[convKey{a.App, a.Conv}]++
	}
	keys := make([]convKey, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(x, y convKey) int { return cmp.Or(cmp.Compare(x.app, y.app), cmp.Compare(x.conv, y.conv)) })

	tx, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	bump := &pgx.Batch{}
	for _, k := range keys {
		bump.Queue(`INSERT INTO convs AS c VALUES ($1, $2, $3)
ON CONFLICT (app, conv) DO UPDATE SET last_seq = c.last_seq + excluded.last_seq RETURNING last_seq`, k.app, k.conv, counts[k])
	}
	br := tx.SendBatch(ctx, bump)
	next := make(map[convKey]uint64, len(keys))
	for _, k := range keys {
		var last int64
		if err := br.QueryRow().Scan(&last); err != nil {
			br.Close()
			return err
		}
		next[k] = uint64(last-counts[k]) + 1
	}
	if err := br.Close(); err != nil {
		return err
	}
	now := time.Now().UnixMilli()
	ins := &pgx.Batch{}
	for _, a := range msgs {
		k := convKey{a.App, a.Conv}
		a.Msg.Id, a.Msg.Seq, a.Msg.Timestamp = lastID.Add(1), next[k], now
		next[k]++
		v, err := proto.Marshal(a.Msg)
		if err != nil {
			return err
		}
		ins.Queue("INSERT INTO messages VALUES ($1, $2, $3, $4)", a.App, a.Conv, int64(a.Msg.Seq), v)
	}
	if err := tx.SendBatch(ctx, ins).Close(); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// BenchmarkReceiptsPG measures Receipts of one group conversation for
// 100 and 10,000 users, each with 2 devices that acknowledged 20
// conversations, and a shared read cursor of the group for every other
// user: cursors of other conversations are what an index on the users'
// cursors alone would make it read.
//
//	go test -run '^$' -bench ReceiptsPG ./store/pgstore/
func BenchmarkReceiptsPG(b *testing.B) {
	const users, convs = 10_000, 20
	dbURL := testURL(b)
	s := openT(b, dbURL, newSchema(b, dbURL))
	defer s.Close()
	for _, sql := range []string{
		`INSERT INTO cursors (app, user_id, device, conv, acked)
SELECT 'org/app', 'u' || u, d, 'g:g' || c, u + c FROM generate_series(1, $1::int) u,
	unnest(ARRAY['phone', 'laptop']) d, generate_series(1, $2::int) c`,
		`INSERT INTO reads (app, user_id, conv, read_seq, shared_seq)
SELECT 'org/app', 'u' || u, 'g:g1', u, u FROM generate_series(1, $1::int, 2) u`,
		`ANALYZE`,
	} {
		args := []any{users, convs}
		if sql == `ANALYZE` {
			args = nil
		} else if !strings.Contains(sql, "$2") {
			args = args[:1]
		}
		if _, err := s.pool.Exec(b.Context(), sql, args...); err != nil {
			b.Fatal(err)
		}
	}
	for _, n := range []int{100, users} {
		b.Run(fmt.Sprintf("users=%d", n), func(b *testing.B) {
			ids := make([]string, n)
			for i := range ids {
				ids[i] = fmt.Sprint("u", i*(users/n)+1)
			}
			for b.Loop() {
				r, err := s.Receipts(b.Context(), "org/app", "g:g1", ids)
				if err != nil || len(r) != n || r[0].Delivered == 0 {
					b.Fatalf("Receipts: %d receipts, %v", len(r), err)
				}
			}
		})
	}
}

package pebblestore

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"google.golang.org/protobuf/proto"

	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// The benchmarks report msgs/s: messages (or, for the baseline, values)
// durably committed per second, every commit synced. Each sub-benchmark
// opens a fresh database in b.TempDir(), so the store and the baseline run
// on the same disk in one run and can be compared directly.

var writerCounts = []int{1, 16, 64}

// payload256 returns a TXT payload of 256 bytes.
func payload256(b *testing.B) []byte {
	p, err := proto.Marshal(&qimpb.MessageTxt{Txt: strings.Repeat("x", 253)})
	if err != nil || len(p) != 256 {
		b.Fatalf("payload: %d bytes, %v", len(p), err)
	}
	return p
}

func benchMsg(payload []byte, from, to, clientMsgID string) store.Append {
	return store.Append{
		App:     "bench/app",
		Conv:    store.DirectConv(from, to),
		Members: []string{from, to},
		Msg: &qimpb.Message{
			Type:        qimpb.MessageType_TXT,
			Payload:     payload,
			ToUser:      to,
			FromUser:    from,
			FromDevice:  "phone",
			ClientMsgId: clientMsgID,
		},
	}
}

// runWriters runs op b.N times in total, spread over writers goroutines.
func runWriters(b *testing.B, writers int, op func(w int, i int64) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for w := range writers {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
				if err := op(w, i); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
}

// BenchmarkAppend measures Append of one 256-byte message per call, synced,
// from 1, 16 and 64 goroutines, each writing to its own conversation.
func BenchmarkAppend(b *testing.B) {
	payload := payload256(b)
	for _, writers := range writerCounts {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			s := openT(b, b.TempDir(), Options{})
			defer s.Close()
			runWriters(b, writers, func(w int, i int64) error {
				m := benchMsg(payload, fmt.Sprint("w", w), "peer", fmt.Sprint(i))
				_, err := s.Append(b.Context(), []store.Append{m})
				return err
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkAppendNoSync measures Append as BenchmarkAppend does, on an
// in-memory file system without syncs: the CPU cost of an Append, which the
// sync's latency hides in the other benchmarks (and whose disk, shared with
// other work, makes them noisy).
func BenchmarkAppendNoSync(b *testing.B) {
	payload := payload256(b)
	for _, writers := range writerCounts {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			s := openT(b, "db", Options{FS: vfs.NewMem(), NoSync: true})
			defer s.Close()
			runWriters(b, writers, func(w int, i int64) error {
				m := benchMsg(payload, fmt.Sprint("w", w), "peer", fmt.Sprint(i))
				_, err := s.Append(b.Context(), []store.Append{m})
				return err
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkAppendBatch measures Append from one goroutine of 64 messages per
// call over 16 conversations, the server's group commit.
func BenchmarkAppendBatch(b *testing.B) {
	const batch = 64
	payload := payload256(b)
	s := openT(b, b.TempDir(), Options{})
	defer s.Close()
	msgs := make([]store.Append, batch)
	b.ResetTimer()
	for i := range b.N {
		for j := range msgs {
			msgs[j] = benchMsg(payload, fmt.Sprint("u", j%16), "peer", fmt.Sprint(i*batch+j))
		}
		if _, err := s.Append(b.Context(), msgs); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkAppendPush measures Append as BenchmarkAppend does, every
// message with a PushAt: the cost of its outbox job (two more keys in the
// batch). NoSync is the in-memory, unsynced variant, as in
// BenchmarkAppendNoSync, and batch=64 the shape of BenchmarkAppendBatch.
func BenchmarkAppendPush(b *testing.B) {
	payload := payload256(b)
	pushAt := time.Now()
	for _, tt := range []struct {
		name string
		dir  func(b *testing.B) string
		opts Options
	}{
		{"sync", func(b *testing.B) string { return b.TempDir() }, Options{}},
		{"nosync", func(*testing.B) string { return "db" }, Options{FS: vfs.NewMem(), NoSync: true}},
	} {
		for _, writers := range writerCounts {
			b.Run(fmt.Sprintf("%s/writers=%d", tt.name, writers), func(b *testing.B) {
				s := openT(b, tt.dir(b), tt.opts)
				defer s.Close()
				runWriters(b, writers, func(w int, i int64) error {
					m := benchMsg(payload, fmt.Sprint("w", w), "peer", fmt.Sprint(i))
					m.PushAt = pushAt
					_, err := s.Append(b.Context(), []store.Append{m})
					return err
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			})
		}
	}
	b.Run("batch=64", func(b *testing.B) {
		const batch = 64
		s := openT(b, b.TempDir(), Options{})
		defer s.Close()
		msgs := make([]store.Append, batch)
		b.ResetTimer()
		for i := range b.N {
			for j := range msgs {
				msgs[j] = benchMsg(payload, fmt.Sprint("u", j%16), "peer", fmt.Sprint(i*batch+j))
				msgs[j].PushAt = pushAt
			}
			if _, err := s.Append(b.Context(), msgs); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "msgs/s")
	})
}

// BenchmarkPebbleSyncBaseline measures Pebble alone: a batch with one
// 256-byte value per commit, synced, from 1, 16 and 64 goroutines; and, for
// comparison with BenchmarkAppendBatch, 64 values per commit from one.
func BenchmarkPebbleSyncBaseline(b *testing.B) {
	value := make([]byte, 256)
	open := func(b *testing.B) *pebble.DB {
		db, err := pebble.Open(b.TempDir(), &pebble.Options{
			Logger:             pebbleLogger{slog.New(slog.DiscardHandler)},
			FormatMajorVersion: pebble.FormatNewest,
		})
		if err != nil {
			b.Fatal(err)
		}
		return db
	}
	key := func(w int, i int64) []byte {
		k := fmt.Appendf(nil, "a\x00bench/app\x00m\x00u:w%d:peer\x00", w)
		return binary.BigEndian.AppendUint64(k, uint64(i))
	}
	for _, writers := range writerCounts {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			db := open(b)
			defer db.Close()
			runWriters(b, writers, func(w int, i int64) error {
				batch := db.NewBatch()
				batch.Set(key(w, i), value, nil)
				return batch.Commit(pebble.Sync)
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
	b.Run("batch=64", func(b *testing.B) {
		db := open(b)
		defer db.Close()
		b.ResetTimer()
		for i := range b.N {
			batch := db.NewBatch()
			for j := range 64 {
				batch.Set(key(j%16, int64(i*64+j)), value, nil)
			}
			if err := batch.Commit(pebble.Sync); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N*64)/b.Elapsed().Seconds(), "msgs/s")
	})
}

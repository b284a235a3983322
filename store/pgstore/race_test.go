package pgstore

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/store"
)

// TestRaceProcesses has 4 Stores (4 pools, as 4 qimd processes would)
// append to 50 conversations at once for 5 s, in batches of 1 to 64
// messages spread over several conversations: no call fails (no
// deadlock), and afterwards every conversation's seqs are exactly
// 1..LastSeq, each holding the message acknowledged with that seq.
func TestRaceProcesses(t *testing.T) {
	const (
		stores     = 4
		perStore   = 2 // goroutines per Store
		convs      = 50
		duration   = 5 * time.Second
		maxCalls   = 100_000 // per goroutine; the duration ends the loop first
		app        = "org/app"
		recipient  = "hub"
		maxBatch   = 64
		convsInOne = 8 // at most this many conversations per batch
	)
	dbURL := testURL(t)
	schema := newSchema(t, dbURL)
	ss := make([]*Store, stores)
	for i := range ss {
		ss[i] = openT(t, dbURL, schema)
		defer ss[i].Close()
	}
	sender := func(c int) string { return fmt.Sprintf("u%02d", c) }

	type acked struct {
		conv string
		msg  []byte // proto.Marshal of the result
		id   uint64
		seq  uint64
	}
	results := make([][]acked, stores*perStore)
	deadline := time.Now().Add(duration)
	var wg sync.WaitGroup
	for w := range stores * perStore {
		s := ss[w%stores]
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for call := 0; call < maxCalls && time.Now().Before(deadline); call++ {
				n := 1 + rng.IntN(maxBatch)
				pick := make([]int, 1+rng.IntN(convsInOne))
				for i := range pick {
					pick[i] = rng.IntN(convs)
				}
				msgs := make([]store.Append, n)
				for i := range msgs {
					c := pick[rng.IntN(len(pick))]
					msgs[i] = store.Append{
						App: app, Conv: store.DirectConv(sender(c), recipient), Members: []string{sender(c), recipient},
						Msg: testMessage(sender(c), recipient, fmt.Sprintf("w%d-%d-%d", w, call, i)),
					}
				}
				res, err := s.Append(t.Context(), msgs)
				if err != nil {
					t.Errorf("worker %d, call %d: Append: %v", w, call, err)
					return
				}
				for i, r := range res {
					if r.Duplicate {
						t.Errorf("worker %d: unexpected Duplicate", w)
						return
					}
					v, err := proto.Marshal(r.Msg)
					if err != nil {
						t.Fatal(err)
					}
					results[w] = append(results[w], acked{msgs[i].Conv, v, r.Msg.Id, r.Msg.Seq})
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	// Read every conversation back, from one Store.
	s := ss[0]
	stored := make(map[string]map[uint64][]byte) // conv -> seq -> message
	total := 0
	for c := range convs {
		conv := store.DirectConv(sender(c), recipient)
		last, err := s.LastSeq(t.Context(), app, conv)
		if err != nil {
			t.Fatalf("LastSeq: %v", err)
		}
		msgs, err := s.Messages(t.Context(), app, conv, 0, int(last)+10)
		if err != nil {
			t.Fatalf("Messages: %v", err)
		}
		if uint64(len(msgs)) != last {
			t.Errorf("%s: %d messages, LastSeq %d", conv, len(msgs), last)
		}
		stored[conv] = make(map[uint64][]byte)
		for i, m := range msgs {
			if m.Seq != uint64(i+1) {
				t.Fatalf("%s: message %d has seq %d (gap or double)", conv, i, m.Seq)
			}
			v, err := proto.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			stored[conv][m.Seq] = v
		}
		total += len(msgs)
	}
	ids := make(map[uint64]bool)
	n := 0
	for w, res := range results {
		var prevID uint64
		for _, a := range res {
			n++
			if ids[a.id] {
				t.Fatalf("id %d given twice", a.id)
			}
			ids[a.id] = true
			if a.id <= prevID {
				t.Errorf("worker %d: id %d after %d", w, a.id, prevID)
			}
			prevID = a.id
			if got := stored[a.conv][a.seq]; !proto.Equal(unmarshalT(t, got), unmarshalT(t, a.msg)) {
				t.Fatalf("%s seq %d: stored message differs from the acknowledged one", a.conv, a.seq)
			}
		}
	}
	if n != total {
		t.Errorf("%d messages acknowledged, %d stored", n, total)
	}
	t.Logf("%d messages in %v from %d Stores (%.0f/s)", n, duration, stores, float64(n)/duration.Seconds())
}

// TestRaceClientMsgID has two Stores append the same client message id at
// the same moment, many times, to the same conversation or to two: the
// message is stored once, and both get its seq and id.
func TestRaceClientMsgID(t *testing.T) {
	const rounds = 150
	dbURL := testURL(t)
	schema := newSchema(t, dbURL)
	s1, s2 := openT(t, dbURL, schema), openT(t, dbURL, schema)
	defer s1.Close()
	defer s2.Close()
	app := "org/app"
	for round := range rounds {
		id := fmt.Sprint("r", round)
		to := [2]string{"bob", "bob"}
		if round%2 == 1 {
			to[1] = "carol" // the same id to another conversation
		}
		var res [2]store.AppendResult
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, s := range []*Store{s1, s2} {
			wg.Go(func() {
				a := store.Append{App: app, Conv: store.DirectConv("alice", to[i]), Members: []string{"alice", to[i]},
					Msg: testMessage("alice", to[i], id)}
				<-start
				r, err := s.Append(t.Context(), []store.Append{a})
				if err != nil {
					t.Errorf("round %d, store %d: Append: %v", round, i+1, err)
					return
				}
				res[i] = r[0]
			})
		}
		close(start)
		wg.Wait()
		if t.Failed() {
			return
		}
		if res[0].Duplicate == res[1].Duplicate {
			t.Fatalf("round %d: Duplicate %t and %t, want exactly one", round, res[0].Duplicate, res[1].Duplicate)
		}
		if res[0].Msg.Id != res[1].Msg.Id || res[0].Msg.Seq != res[1].Msg.Seq {
			t.Fatalf("round %d: id %d seq %d vs id %d seq %d", round, res[0].Msg.Id, res[0].Msg.Seq, res[1].Msg.Id, res[1].Msg.Seq)
		}
	}
	total := 0
	for _, peer := range []string{"bob", "carol"} {
		conv := store.DirectConv("alice", peer)
		msgs, err := s1.Messages(t.Context(), app, conv, 0, 2*rounds)
		if err != nil {
			t.Fatalf("Messages: %v", err)
		}
		for i, m := range msgs {
			if m.Seq != uint64(i+1) {
				t.Fatalf("%s: message %d has seq %d", conv, i, m.Seq)
			}
		}
		total += len(msgs)
	}
	if total != rounds {
		t.Errorf("%d messages stored, want %d (one per client message id)", total, rounds)
	}
	retries := s1.dedupRetries.Load() + s2.dedupRetries.Load()
	t.Logf("%d rounds, %d attempts started again after losing the race", rounds, retries)
	if retries == 0 {
		t.Error("no Append lost a race: the test did not exercise the retry")
	}
}

package core

import (
	"fmt"
	"sync/atomic"
	"testing"

	qimpb "github.com/qim-im/qim/proto"
)

type countingReceiver struct{ n atomic.Int64 }

func (r *countingReceiver) Receive(Event) { r.n.Add(1) }

// BenchmarkRoute measures LocalRouter.Deliver of one message to the
// members of a group with every member online (one device each): the
// routing table's share of a fan-out, per message.
func BenchmarkRoute(b *testing.B) {
	for _, n := range []int{2, 100, 1000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			var r LocalRouter
			var rc countingReceiver
			users := make([]string, n)
			for i := range users {
				users[i] = fmt.Sprintf("user-%d", i)
				r.Register("app", users[i], &rc)
			}
			m := &qimpb.Message{ToGroup: "g", Seq: 1}
			ev := Event{Msg: m, Frame: &PushFrame{msg: m, cost: MsgCost(m)}}
			b.ReportAllocs()
			for b.Loop() {
				r.Deliver("app", users, ev)
			}
			if rc.n.Load() == 0 {
				b.Fatal("nothing delivered")
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(int64(b.N)*int64(n)), "ns/delivery")
		})
	}
}

package presence

import (
	"fmt"
	"sync/atomic"
	"testing"
)

// BenchmarkJoinLeave joins and leaves connections of 100,000 users from
// parallel goroutines, with the default grace and window: each user's
// timer, change and idle entry come and go as in a server.
func BenchmarkJoinLeave(b *testing.B) {
	names := make([]string, 100_000)
	for i := range names {
		names[i] = fmt.Sprintf("user%06d", i)
	}
	var published atomic.Int64
	l := NewLocal(Config{Publish: func(Change) { published.Add(1) }})
	defer l.Close()
	var next atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1)
			c := l.Join("app", names[i%int64(len(names))], "phone", i%4 == 0)
			c.Leave()
		}
	})
}

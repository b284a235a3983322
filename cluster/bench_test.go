package cluster

import (
	"bufio"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/qim-im/qim/core"
	qimpb "github.com/qim-im/qim/proto"
)

// The latency benchmarks: two clustered servers on loopback, the sender
// connected to one, the receiver to the other, one event in flight at a
// time; p50-ns and p99-ns are the latencies from the call (Deliver,
// Publish) to the receiver. Compare BenchmarkNATSRoute with
// BenchmarkBareNATSPubSub of the same run:
//
//	go test -run '^$' -bench 'NATSRoute|BareNATSPubSub' -count 1 ./cluster/

// receiverFunc is a core.Receiver that calls itself.
type receiverFunc func(core.Event)

func (f receiverFunc) Receive(ev core.Event) { f(ev) }

const (
	benchApp  = "org/app"
	benchUser = "bob@example.com"
)

// benchEvent is a message event of a 100-byte text, as the hub routes it.
func benchEvent() core.Event {
	return core.Event{
		Msg: &qimpb.Message{Id: 123456, Seq: 42, Timestamp: time.Now().UnixMilli(), FromUser: "alice@example.com",
			FromDevice: "phone", ToUser: benchUser, Type: qimpb.MessageType_TXT, Payload: []byte(strings.Repeat("x", 100)),
			ClientMsgId: "0123456789abcdef"},
		Conv: "u:alice@example.com:bob@example.com",
		Read: time.Now(),
	}
}

// waitFor waits for one signal on ch, failing the benchmark after 10 s.
func waitFor(b *testing.B, ch <-chan struct{}) {
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		b.Fatal("nothing arrived within 10 s")
	}
}

// reportLatencies reports the median and 99th percentile of lat.
func reportLatencies(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
}

// BenchmarkNATSRoute: Deliver on node A, Receive on node B.
func BenchmarkNATSRoute(b *testing.B) {
	rs := openNodes(b, startCluster(b, 2), RouterConfig{})
	got := make(chan struct{}, 1)
	b.Cleanup(rs[1].Register(benchApp, benchUser, receiverFunc(func(core.Event) { got <- struct{}{} })))
	ev := benchEvent()
	users := []string{benchUser}
	data, _ := encodeEvent(benchApp, rs[0].Node(), ev, nil)
	for range 100 {
		rs[0].Deliver(benchApp, users, ev)
		waitFor(b, got)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		rs[0].Deliver(benchApp, users, ev)
		waitFor(b, got)
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	reportLatencies(b, lat)
	b.ReportMetric(float64(len(data)), "payload-B")
}

// BenchmarkBareNATSPubSub: the baseline of BenchmarkNATSRoute, nats.go
// alone: Publish on a connection to one server, the callback of a
// subscription on a connection to the other, with a payload of the size
// of the router's envelope on a subject of the router's form.
func BenchmarkBareNATSPubSub(b *testing.B) {
	servers := startCluster(b, 2)
	pub, err := nats.Connect(servers[0].ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	sub, err := nats.Connect(servers[1].ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	subject := newSubjects(DefaultPrefix).userSubject(benchApp, benchUser)
	got := make(chan struct{}, 1)
	if _, err := sub.Subscribe(subject, func(*nats.Msg) { got <- struct{}{} }); err != nil {
		b.Fatal(err)
	}
	if err := sub.Flush(); err != nil {
		b.Fatal(err)
	}
	data, _ := encodeEvent(benchApp, "node0-01234567", benchEvent(), nil)
	payload := []byte(strings.Repeat("x", len(data)))
	// The subscription reaches the publisher's server asynchronously.
	for deadline := time.Now().Add(10 * time.Second); ; {
		if err := pub.Publish(subject, payload); err != nil {
			b.Fatal(err)
		}
		select {
		case <-got:
		case <-time.After(10 * time.Millisecond):
			if time.Now().After(deadline) {
				b.Fatal("the subscription never reached the publisher's server")
			}
			continue
		}
		break
	}
	for range 100 {
		_ = pub.Publish(subject, payload)
		waitFor(b, got)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		if err := pub.Publish(subject, payload); err != nil {
			b.Fatal(err)
		}
		waitFor(b, got)
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	reportLatencies(b, lat)
	b.ReportMetric(float64(len(data)), "payload-B")
}

// BenchmarkNATSSubscriptionMemory measures what 100,000 subscriptions of
// the users' subjects (qim.u.APP.USER, user ids like
// "user000001@example.com") cost in heap, after a GC, in this process:
//
//   - Server: the server the subscribing client is connected to (the
//     client speaks the protocol over a bare socket, so it holds no heap);
//   - ServerAndPeer: that server and a second one of its cluster, which
//     learns every subscription through their route;
//   - RouterAndServer: a NATSRouter registering 100,000 users (its map,
//     nats.go's subscriptions) and its server.
//
// It ignores b.N; run it once:
//
//	go test -run '^$' -bench NATSSubscriptionMemory -benchtime 1x ./cluster/
func BenchmarkNATSSubscriptionMemory(b *testing.B) {
	const n = 100_000
	subs := newSubjects(DefaultPrefix)
	user := func(i int) string { return fmt.Sprintf("user%06d@example.com", i) }
	b.Run("Server", func(b *testing.B) {
		servers := startCluster(b, 1)
		before := heapAlloc()
		conn := rawSubscribe(b, servers[0].ClientURL(), n, func(i int) string { return subs.userSubject(benchApp, user(i)) })
		defer conn.Close()
		reportHeap(b, before, n)
	})
	b.Run("ServerAndPeer", func(b *testing.B) {
		servers := startCluster(b, 2)
		base := servers[1].NATS().NumSubscriptions()
		before := heapAlloc()
		conn := rawSubscribe(b, servers[0].ClientURL(), n, func(i int) string { return subs.userSubject(benchApp, user(i)) })
		defer conn.Close()
		eventually(b, "the peer learns every subscription", func() bool {
			return servers[1].NATS().NumSubscriptions()-base >= n
		})
		reportHeap(b, before, n)
	})
	b.Run("RouterAndServer", func(b *testing.B) {
		r := openNodes(b, startCluster(b, 1), RouterConfig{})[0]
		rcv := receiverFunc(func(core.Event) {})
		before := heapAlloc()
		var wg sync.WaitGroup
		const workers = 64
		for w := range workers {
			wg.Go(func() {
				for i := w; i < n; i += workers {
					r.Register(benchApp, user(i), rcv)
				}
			})
		}
		wg.Wait()
		reportHeap(b, before, n)
	})
}

// heapAlloc returns the bytes of live heap, after a GC.
func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// reportHeap reports the heap grown since before, per subscription.
func reportHeap(b *testing.B, before uint64, n int) {
	after := heapAlloc()
	b.ReportMetric(float64(int64(after)-int64(before))/float64(n), "heap-B/sub")
	b.ReportMetric(0, "ns/op")
}

// rawSubscribe connects to the NATS server at url over a bare socket,
// subscribes to n subjects, and returns once the server has processed
// them (PING, PONG).
func rawSubscribe(b *testing.B, url string, n int, subject func(int) string) net.Conn {
	b.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "nats://"))
	if err != nil {
		b.Fatal(err)
	}
	br := bufio.NewReader(conn)
	if _, err := br.ReadString('\n'); err != nil { // INFO
		b.Fatal(err)
	}
	bw := bufio.NewWriter(conn)
	fmt.Fprintf(bw, "CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1}\r\n")
	for i := range n {
		fmt.Fprintf(bw, "SUB %s %d\r\n", subject(i), i+1)
	}
	fmt.Fprintf(bw, "PING\r\n")
	if err := bw.Flush(); err != nil {
		b.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			b.Fatal(err)
		}
		switch strings.TrimSpace(line) {
		case "PONG":
			_ = conn.SetReadDeadline(time.Time{})
			return conn
		case "PING":
			fmt.Fprintf(conn, "PONG\r\n")
		default:
			if strings.HasPrefix(line, "-ERR") {
				b.Fatalf("server: %s", line)
			}
		}
	}
}

package udprelay

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// BenchmarkRelay measures echo throughput with a window of datagrams in
// flight, straight to a UDP echo server ("direct", the baseline) and through
// a relay with no impairments ("relay"). It reports pkts/s, the datagrams
// delivered per second counting both directions, and lost/op, the fraction
// of datagrams the client gave up on.
func BenchmarkRelay(b *testing.B) {
	for _, bb := range []struct {
		name  string
		relay bool
	}{
		{"direct", false},
		{"relay", true},
	} {
		b.Run(bb.name, func(b *testing.B) {
			addr := startBareEcho(b)
			if bb.relay {
				addr = startRelay(b, Config{Target: addr}).Addr()
			}
			benchEcho(b, dial(b, addr))
		})
	}
}

// benchEcho sends b.N datagrams of 1200 bytes on c, keeping up to a window
// of them unanswered, and reads the echoes. A datagram unanswered for 100ms
// counts as lost and is replaced.
func benchEcho(b *testing.B, c *net.UDPConn) {
	const (
		window  = 64
		size    = 1200
		timeout = 100 * time.Millisecond
	)
	payload := make([]byte, size)
	buf := make([]byte, 2048)
	send := func() {
		if _, err := c.Write(payload); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	sent, got, lost := 0, 0, 0
	for ; sent < window && sent < b.N; sent++ {
		send()
	}
	for got < b.N {
		c.SetReadDeadline(time.Now().Add(timeout))
		if _, err := c.Read(buf); err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				b.Fatal(err)
			}
			if lost += sent - got; lost > b.N/10+window {
				b.Fatalf("lost %d of %d datagrams", lost, sent)
			}
			for sent = got; sent < got+window && sent < b.N; sent++ {
				send()
			}
			continue
		}
		got++
		if sent < b.N {
			send()
			sent++
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(2*float64(got)/elapsed.Seconds(), "pkts/s")
	b.ReportMetric(float64(lost)/float64(b.N), "lost/op")
}

// startBareEcho starts a UDP echo server on 127.0.0.1:0 that keeps no
// record, stopped when the benchmark ends, and returns its address.
func startBareEcho(b *testing.B) string {
	b.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	tuneBuffers(conn)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, readBufSize)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			conn.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	b.Cleanup(func() {
		conn.Close()
		<-done
	})
	return conn.LocalAddr().String()
}

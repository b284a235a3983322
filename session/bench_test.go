package session_test

import (
	"bufio"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/qim-im/qim/certs"
	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
)

// BenchmarkPair measures one client pair: alice sends 100-byte texts to bob,
// each acknowledged only after it is on disk, and bob receives them. The
// quic-echo sub-benchmark is the bare transport baseline of the same shape
// (one QUIC stream, a 100-byte frame and its echo per op), run in the same
// command, so the figures can be read as ratios on a noisy machine.
func BenchmarkPair(b *testing.B) {
	text := fmt.Sprintf("%0100d", 0)

	b.Run("quic-echo-baseline", func(b *testing.B) { benchEcho(b, 1) })
	b.Run("quic-echo-baseline-16", func(b *testing.B) { benchEcho(b, 16) })
	for _, tt := range []struct {
		name      string
		senders   int
		noOffline bool
	}{
		{"durable-1", 1, false},
		{"durable-16", 16, false},
		{"ephemeral-1", 1, true},
		{"ephemeral-16", 16, true},
	} {
		b.Run(tt.name, func(b *testing.B) {
			srv := testserver.Start(b, testserver.Options{SendRate: -1}) // measure, do not throttle
			alice := benchDial(b, srv, "alice")
			bob := benchDial(b, srv, "bob")
			received := make(chan int, 1)
			var lastRecv time.Time // written by the receiver before it sends on received
			go func() {
				n := 0
				for n < b.N {
					select {
					case _, ok := <-bob.Messages():
						if !ok {
							received <- n
							return
						}
						n++
						lastRecv = time.Now()
					case <-time.After(2 * time.Second):
						// Unstored messages are best-effort: a receiver
						// that falls behind loses some.
						received <- n
						return
					}
				}
				received <- n
			}()
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			per := (b.N + tt.senders - 1) / tt.senders
			for s := range tt.senders {
				n := min(per, b.N-s*per)
				wg.Go(func() {
					for range n {
						if _, err := alice.Send(context.Background(), client.ToUser("bob"), client.Outgoing{Text: text, NoOffline: tt.noOffline}); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			n := <-received
			b.StopTimer()
			if n != b.N && !tt.noOffline {
				b.Fatalf("bob received %d of %d stored messages", n, b.N)
			}
			b.ReportMetric(float64(n)/lastRecv.Sub(start).Seconds(), "msgs/s")
			b.ReportMetric(100*float64(b.N-n)/float64(b.N), "%lost")
			alice.Close()
			bob.Close()
		})
	}
}

func benchDial(b *testing.B, srv *testserver.Server, user string) *client.Client {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Config{Addr: srv.Addr, TLSConfig: srv.ClientTLS(), Org: "demo", Appkey: "demo", User: user, Token: srv.Token(user), Device: "bench", Inbox: 4096})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// benchEcho is the bare quic-go baseline: streams concurrent round trips of
// a 100-byte frame over one connection to an echo server.
func benchEcho(b *testing.B, streams int) {
	dir := b.TempDir()
	if err := certs.Generate(dir, nil); err != nil {
		b.Fatal(err)
	}
	srvTLS, err := certs.LoadServerTLS(dir+"/"+certs.ServerCertFile, dir+"/"+certs.ServerKeyFile)
	if err != nil {
		b.Fatal(err)
	}
	ln, err := quic.ListenAddr("127.0.0.1:0", srvTLS, &quic.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	var srvWG sync.WaitGroup
	srvWG.Go(func() {
		conn, err := ln.Accept(context.Background())
		if err != nil {
			return
		}
		for {
			str, err := conn.AcceptStream(context.Background())
			if err != nil {
				return
			}
			srvWG.Go(func() {
				r := bufio.NewReader(str)
				var buf []byte
				for {
					var cmd qimpb.Command
					if buf, err = qimpb.ReadFrame(r, qimpb.DefaultMaxFrame, buf, &cmd); err != nil {
						return
					}
					frame, _ := qimpb.AppendFrame(nil, &cmd)
					if _, err := str.Write(frame); err != nil {
						return
					}
				}
			})
		}
	})
	cliTLS, err := certs.ClientTLS(dir+"/"+certs.CACertFile, false, "localhost")
	if err != nil {
		b.Fatal(err)
	}
	conn, err := quic.DialAddr(context.Background(), ln.Addr().String(), cliTLS, &quic.Config{})
	if err != nil {
		b.Fatal(err)
	}
	frame, _ := qimpb.AppendFrame(nil, &qimpb.Command{Version: 1, Command: qimpb.CommandType_REQUEST, Payload: make([]byte, 100)})
	b.ResetTimer()
	var wg sync.WaitGroup
	per := (b.N + streams - 1) / streams
	for s := range streams {
		n := min(per, b.N-s*per)
		wg.Go(func() {
			str, err := conn.OpenStreamSync(context.Background())
			if err != nil {
				b.Error(err)
				return
			}
			r := bufio.NewReader(str)
			var buf []byte
			for range n {
				if _, err := str.Write(frame); err != nil {
					b.Error(err)
					return
				}
				var cmd qimpb.Command
				if buf, err = qimpb.ReadFrame(r, qimpb.DefaultMaxFrame, buf, &cmd); err != nil {
					b.Error(err)
					return
				}
			}
			str.Close()
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	conn.CloseWithError(0, "")
	ln.Close()
	srvWG.Wait()
}

package quicsrv_test

import (
	"context"
	"errors"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
)

// TestUnauthenticatedMemory floods the server with connections that never
// authenticate but write 4 x 64 KiB each on conversation streams, which
// quic-go buffers because the server does not read them before CONNECT. It
// bounds the heap growth per connection (the connection window) and in
// total (the per-address cap). With the old 256 KiB connection window and
// no caps, each connection cost ~430 KiB and the second case ~125 MiB;
// now ~127 KiB and ~21 MiB.
func TestUnauthenticatedMemory(t *testing.T) {
	for _, tt := range []struct {
		name     string
		perIP    int    // Options.MaxUnauthenticatedPerIP
		conns    int    // connections dialed
		open     int    // of which the server keeps
		perConn  uint64 // bound of heap growth per connection kept; 0: none
		maxTotal uint64 // bound of the whole heap growth
	}{
		{name: "window", perIP: -1, conns: 150, open: 150, perConn: 200 << 10, maxTotal: 150 * 200 << 10},
		{name: "per-address cap", perIP: 0, conns: 300, open: 100, maxTotal: 40 << 20},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := testserver.Start(t, testserver.Options{AuthTimeout: 20 * time.Second, MaxUnauthenticatedPerIP: tt.perIP})
			pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			tr := &quic.Transport{Conn: pc}
			t.Cleanup(func() { tr.Close(); pc.Close() })
			raddr, err := net.ResolveUDPAddr("udp", srv.Addr)
			if err != nil {
				t.Fatal(err)
			}
			before := heapAfterGC()

			payload := make([]byte, 64<<10)
			var (
				wg    sync.WaitGroup
				mu    sync.Mutex
				conns []*quic.Conn
			)
			ctx := ctxTimeout(t)
			sem := make(chan struct{}, 32)
			for range tt.conns {
				wg.Go(func() {
					sem <- struct{}{}
					defer func() { <-sem }()
					qc, err := tr.Dial(ctx, raddr, srv.ClientTLS(), &quic.Config{MaxIdleTimeout: 30 * time.Second})
					if err != nil {
						t.Errorf("dial: %v", err)
						return
					}
					mu.Lock()
					conns = append(conns, qc)
					mu.Unlock()
					// Stream 0 (the control stream) stays silent; four
					// conversation streams write until flow control stops
					// them.
					// Errors are those of refused connections, counted
					// below.
					if _, err := qc.OpenStream(); err != nil {
						return
					}
					deadline := time.Now().Add(time.Second)
					for range 4 {
						str, err := qc.OpenStream()
						if err != nil {
							return
						}
						str.SetWriteDeadline(deadline)
						if _, err := str.Write(payload); err != nil && !isTimeout(err) {
							return
						}
					}
				})
			}
			wg.Wait()
			// Count the connections the server closed: with RATE_LIMITED
			// only. A refusal is sent after a linger of up to 1 s
			// (DISCONNECT first), so the count may take that long to
			// settle.
			refused := 0
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				refused = 0
				for _, qc := range conns {
					select {
					case <-qc.Context().Done():
						var ae *quic.ApplicationError
						if errors.As(context.Cause(qc.Context()), &ae) && qimpb.Code(ae.ErrorCode) == qimpb.Code_RATE_LIMITED {
							refused++
							continue
						}
						t.Fatalf("connection closed: %v", context.Cause(qc.Context()))
					default:
					}
				}
				if tt.conns-refused <= tt.open || time.Now().After(deadline) {
					break
				}
			}
			if got := tt.conns - refused; got != tt.open {
				t.Errorf("%d connections kept open, want %d", got, tt.open)
			}
			growth := heapAfterGC() - before
			perConn := growth / uint64(tt.open)
			t.Logf("%d connections, %d open: heap +%.1f MiB, %.0f KiB per open connection (client side included)",
				tt.conns, tt.conns-refused, float64(growth)/(1<<20), float64(perConn)/(1<<10))
			if tt.perConn > 0 && perConn > tt.perConn {
				t.Errorf("heap grew %d KiB per unauthenticated connection, want at most %d KiB", perConn>>10, tt.perConn>>10)
			}
			if growth > tt.maxTotal {
				t.Errorf("heap grew %d MiB in total, want at most %d MiB", growth>>20, tt.maxTotal>>20)
			}
			for _, qc := range conns {
				qc.CloseWithError(0, "")
			}
		})
	}
}

func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

// TestUnauthenticatedTotalCap checks that at MaxUnauthenticated the server
// holds new connections instead of refusing them, and serves them as soon
// as a place frees.
func TestUnauthenticatedTotalCap(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{MaxUnauthenticated: 3, MaxUnauthenticatedPerIP: -1})
	var silent []*rawConn
	for range 3 {
		c := dialRaw(t, srv)
		c.open()
		silent = append(silent, c)
	}
	c := dialRaw(t, srv)
	answered := make(chan struct{})
	go func() {
		defer close(answered)
		ctrl, r := c.open()
		writeCmd(t, ctrl, qimpb.CommandType_CONNECT, &qimpb.Connect{Org: "demo", Appkey: "demo", User: "alice", Token: srv.Token("alice"), Device: "raw"})
		cmd, err := readCmd(t, r)
		if err != nil {
			t.Errorf("read CONNECT answer: %v", err)
			return
		}
		if resp := decodeResponse(t, cmd); resp.Code != 0 {
			t.Errorf("CONNECT refused: %v %s", qimpb.Code(resp.Code), resp.Reason)
		}
	}()
	select {
	case <-answered:
		t.Fatal("a fourth unauthenticated connection was served beyond MaxUnauthenticated 3")
	case <-time.After(300 * time.Millisecond):
	}
	silent[0].qc.CloseWithError(0, "")
	select {
	case <-answered:
	case <-time.After(5 * time.Second):
		t.Fatal("the held connection was not served after a place freed")
	}
}

package httpapi_test

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"go.uber.org/goleak"

	"github.com/qim-im/qim/auth"
	"github.com/qim-im/qim/httpapi"
	"github.com/qim-im/qim/internal/testserver"
)

// The HTTP API's benchmarks, each with a baseline of the same shape that
// runs in the same command (docs/BENCHMARKS.md, "HTTP API"):
//
//	go test -run '^$' -bench 'HTTPSend|BareHTTP|Upload|FsyncBaseline' -benchtime 3s -count 1 ./httpapi/
//
// Compare BenchmarkHTTPSend with BenchmarkBareHTTP (msgs/s), and
// BenchmarkUpload with BenchmarkFsyncBaseline (MiB/s), protocol by
// protocol and at the same number of senders. Every run of a benchmark
// function starts its own servers; the timer covers only the requests.
// Each sender is a goroutine with a client of its own (one connection,
// kept alive) and one request in flight; the senders share b.N requests.

const (
	// benchSenders is how many senders post at once: a few per core, as
	// many phones behind one server would.
	benchSenders = 16
	// imageSize is the size of an upload.
	imageSize = 1 << 20
	// benchText is the text of a message, 100 bytes.
	benchText = "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
)

// benchProtocols are the two ways a sender reaches the API: HTTP/2 over
// TLS on TCP, and HTTP/3 on the QUIC port.
func benchProtocols() []string { return []string{"https", "h3"} }

// BenchmarkHTTPSend posts messages (POST /v1/messages, a 100-byte text,
// each sender to a receiver of its own, with a token of its own user) to a
// real qimd with its embedded store: each is stored durably before its
// answer. The receivers are offline.
func BenchmarkHTTPSend(b *testing.B) {
	for _, proto := range benchProtocols() {
		b.Run(proto, func(b *testing.B) {
			noLeaks(b)
			srv := startQimd(b)
			clients := benchClients(b, proto, srv.ClientTLS(), benchSenders)
			base := qimdURL(srv, proto)
			tokens := make([]string, benchSenders)
			for i := range tokens {
				tokens[i] = srv.Token(senderName(i))
			}
			runSenders(b, benchSenders, "msgs/s", func(i int, n int64) error {
				req := messageRequest(base, i, n)
				req.Header.Set("Authorization", "Bearer "+tokens[i])
				return post(clients[i], req, http.StatusOK, proto)
			})
		})
	}
}

// BenchmarkBareHTTP is BenchmarkHTTPSend's baseline: the same requests,
// senders and clients against a bare net/http handler that decodes the
// body and answers an acknowledgement of the same size (bareServer),
// with no authentication and no store.
func BenchmarkBareHTTP(b *testing.B) {
	for _, proto := range benchProtocols() {
		b.Run(proto, func(b *testing.B) {
			noLeaks(b)
			bs := startBare(b)
			clients := benchClients(b, proto, bs.clientTLS, benchSenders)
			base := "https://" + bs.httpsAddr
			if proto == "h3" {
				base = "https://" + bs.h3Addr
			}
			// Tokens of the same length as qimd's, which the handler ignores.
			tokens := make([]string, benchSenders)
			for i := range tokens {
				tokens[i] = auth.Mint([]byte("0123456789abcdef0123456789abcdef"), "demo", "demo", senderName(i), time.Now().Add(time.Hour))
			}
			runSenders(b, benchSenders, "msgs/s", func(i int, n int64) error {
				req := messageRequest(base, i, n)
				req.Header.Set("Authorization", "Bearer "+tokens[i])
				return post(clients[i], req, http.StatusOK, proto)
			})
		})
	}
}

// BenchmarkUpload posts 1 MiB pictures (POST /v1/blobs?to_user=) to a real
// qimd with its directory blob store: each is staged, hashed and stored
// durably (synced file, synced directory) before its answer. Every
// upload's bytes differ, so none is de-duplicated.
func BenchmarkUpload(b *testing.B) {
	for _, proto := range benchProtocols() {
		for _, senders := range []int{1, benchSenders} {
			b.Run(fmt.Sprintf("%s/senders=%d", proto, senders), func(b *testing.B) {
				noLeaks(b)
				srv := startQimd(b)
				clients := benchClients(b, proto, srv.ClientTLS(), senders)
				base := qimdURL(srv, proto)
				images := benchImages(senders)
				tokens := make([]string, senders)
				for i := range tokens {
					tokens[i] = srv.Token(senderName(i))
				}
				b.SetBytes(imageSize)
				runSenders(b, senders, "uploads/s", func(i int, n int64) error {
					markImage(images[i], n)
					req, err := http.NewRequest(http.MethodPost, base+"/v1/blobs?to_user="+receiverName(i), bytes.NewReader(images[i]))
					if err != nil {
						return err
					}
					setUser(req, i)
					req.Header.Set("Content-Type", "image/png")
					req.Header.Set("Authorization", "Bearer "+tokens[i])
					return post(clients[i], req, http.StatusCreated, proto)
				})
				reportMiBps(b)
			})
		}
	}
}

// BenchmarkFsyncBaseline is BenchmarkUpload's baseline: the same bytes,
// from the same number of goroutines, written as the directory blob store
// writes an object (blob/dirblob Put): to a new file in a temporary
// directory, synced and closed, renamed into a directory of objects, and
// that directory synced. Its files are on the file system of the test
// server's data directory (both are in os.TempDir).
func BenchmarkFsyncBaseline(b *testing.B) {
	for _, senders := range []int{1, benchSenders} {
		b.Run(fmt.Sprintf("senders=%d", senders), func(b *testing.B) {
			dir := b.TempDir()
			tmp, objects := filepath.Join(dir, "tmp"), filepath.Join(dir, "objects")
			for _, d := range []string{tmp, objects} {
				if err := os.Mkdir(d, 0o700); err != nil {
					b.Fatal(err)
				}
			}
			images := benchImages(senders)
			b.SetBytes(imageSize)
			runSenders(b, senders, "files/s", func(i int, n int64) error {
				markImage(images[i], n)
				return putFile(tmp, objects, fmt.Sprintf("%d-%d", i, n), images[i])
			})
			reportMiBps(b)
		})
	}
}

// runSenders calls op from senders goroutines, b.N times in all, each
// goroutine's calls one after the other: op(i, n) is goroutine i's call for
// the request numbered n (1 to b.N). Before the timer starts, each
// goroutine calls op(i, -i-1) once, to open its connection. It reports the
// calls per second as unit, their median and 99th percentile latency, and
// the process's CPU time per call (cpu-us/op: senders and servers
// together).
func runSenders(b *testing.B, senders int, unit string, op func(i int, n int64) error) {
	b.Helper()
	var wg sync.WaitGroup
	var failed atomic.Bool
	call := func(i int, n int64) bool {
		if err := op(i, n); err != nil {
			if !failed.Swap(true) {
				b.Errorf("sender %d: %v", i, err)
			}
			return false
		}
		return true
	}
	for i := range senders {
		wg.Go(func() { call(i, int64(-i-1)) })
	}
	wg.Wait()
	if failed.Load() {
		b.FailNow()
	}

	var next atomic.Int64
	lat := make([][]time.Duration, senders)
	cpu0 := cpuTime(b)
	b.ResetTimer()
	for i := range senders {
		wg.Go(func() {
			for n := next.Add(1); n <= int64(b.N) && !failed.Load(); n = next.Add(1) {
				start := time.Now()
				if !call(i, n) {
					return
				}
				lat[i] = append(lat[i], time.Since(start))
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	cpu := cpuTime(b) - cpu0
	if failed.Load() {
		b.FailNow()
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), unit)
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/op")
}

// cpuTime returns the CPU time (user and system) the process has used:
// senders and servers share the process, so its growth over the timed
// part is what a request costs on both sides.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportMiBps reports the benchmark's throughput in MiB/s, from its
// b.SetBytes.
func reportMiBps(b *testing.B) {
	b.ReportMetric(float64(b.N)*imageSize/(1<<20)/b.Elapsed().Seconds(), "MiB/s")
}

// noLeaks fails b if goroutines it started are still running once its
// other cleanups have run. Call it first.
func noLeaks(b *testing.B) {
	opt := goleak.IgnoreCurrent()
	b.Cleanup(func() { goleak.VerifyNone(b, opt) })
}

// startQimd starts a qimd with no per-user rate limits.
func startQimd(b *testing.B) *testserver.Server {
	return testserver.Start(b, testserver.Options{SendRate: -1, InvitesPerHour: -1, UploadQuota: -1})
}

// qimdURL returns the base URL of srv's API over proto: HTTPS on its TCP
// port, or HTTP/3 on its UDP port.
func qimdURL(srv *testserver.Server, proto string) string {
	if proto == "h3" {
		return "https://" + srv.Addr
	}
	return "https://" + srv.HTTPAddr
}

// benchClients returns n HTTP clients, each with a transport of its own
// (one connection, kept alive), that speak proto and trust tc's roots.
// They are closed when b's run ends.
func benchClients(b *testing.B, proto string, tc *tls.Config, n int) []*http.Client {
	clients := make([]*http.Client, n)
	for i := range clients {
		tc := tc.Clone()
		var rt http.RoundTripper
		switch proto {
		case "https":
			tc.NextProtos = []string{"h2"}
			tr := &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}
			b.Cleanup(tr.CloseIdleConnections)
			rt = tr
		case "h3":
			tc.NextProtos = []string{http3.NextProtoH3}
			tr := &http3.Transport{TLSClientConfig: tc, QUICConfig: &quic.Config{MaxIdleTimeout: 30 * time.Second}}
			b.Cleanup(func() { tr.Close() })
			rt = tr
		default:
			b.Fatalf("unknown protocol %q", proto)
		}
		clients[i] = &http.Client{Transport: rt, Timeout: 30 * time.Second}
	}
	return clients
}

func senderName(i int) string   { return fmt.Sprintf("sender%d", i) }
func receiverName(i int) string { return fmt.Sprintf("receiver%d", i) }

// setUser sets the headers that name the application and sender i.
func setUser(req *http.Request, i int) {
	req.Header.Set(httpapi.HeaderApp, "demo/demo")
	req.Header.Set(httpapi.HeaderUser, senderName(i))
}

// messageRequest returns sender i's request n: a 100-byte text to its
// receiver, without the Authorization header.
func messageRequest(base string, i int, n int64) *http.Request {
	body := fmt.Sprintf(`{"to_user":%q,"text":%q,"client_msg_id":"m%d-%d"}`, receiverName(i), benchText, i, n)
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/messages", strings.NewReader(body))
	setUser(req, i)
	req.Header.Set("Content-Type", "application/json")
	return req
}

// post sends req with hc and reads the whole answer, which must have
// status want and have come over proto.
func post(hc *http.Client, req *http.Request, want int, proto string) error {
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %d %s, want %d", req.Method, req.URL.Path, resp.StatusCode, body, want)
	}
	if wantMajor := map[string]int{"https": 2, "h3": 3}[proto]; resp.ProtoMajor != wantMajor {
		return fmt.Errorf("answered over %s, want HTTP/%d", resp.Proto, wantMajor)
	}
	return nil
}

// benchImages returns n pictures of imageSize bytes: a PNG signature, for
// the upload's type sniffing, then random bytes.
func benchImages(n int) [][]byte {
	images := make([][]byte, n)
	for i := range images {
		img := make([]byte, imageSize)
		r := rand.NewChaCha8([32]byte{byte(i), 'q', 'i', 'm'})
		r.Read(img)
		copy(img, "\x89PNG\r\n\x1a\n")
		images[i] = img
	}
	return images
}

// markImage writes n into img after its signature, so that every upload's
// bytes, and hash, differ.
func markImage(img []byte, n int64) {
	binary.BigEndian.PutUint64(img[8:], uint64(n))
}

// putFile writes data to a new file in tmp, syncs and closes it, renames
// it to objects/name and syncs objects: the durable write of one object of
// the directory blob store (blob/dirblob Put).
func putFile(tmp, objects, name string, data []byte) error {
	f, err := os.CreateTemp(tmp, "put-*")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(objects, name))
	}
	if err != nil {
		os.Remove(f.Name())
		return err
	}
	d, err := os.Open(objects)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

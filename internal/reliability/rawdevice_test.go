package reliability_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/client"
	qimpb "github.com/qim-im/qim/proto"
)

// rawDevice is a hand-driven device that records every message the server
// pushes, in arrival order and duplicates included (the client library
// drops them), and acknowledges each at once. It checks the server's promise
// of "each once per connection, in order" at the wire.
type rawDevice struct {
	// Static after newRawDevice.
	user string
	qc   *quic.Conn
	wg   sync.WaitGroup // acceptLoop, readControl and every stream reader

	mu    sync.Mutex
	convs map[string][]*qimpb.Message // guarded by mu
	bad   []string                    // protocol problems; guarded by mu
	total atomic.Int64
	// holdAcks, when set, makes the device record pushes without
	// acknowledging them, like an app killed before it could.
	holdAcks atomic.Bool
}

// dialRawDevice connects user's device and closes it when the test ends.
func dialRawDevice(t testing.TB, addr string, tlsConf *tls.Config, user, token, device string) *rawDevice {
	t.Helper()
	d, err := newRawDevice(addr, tlsConf, user, token, device)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.close)
	return d
}

// newRawDevice connects user's device. The caller closes it.
func newRawDevice(addr string, tlsConf *tls.Config, user, token, device string) (*rawDevice, error) {
	return newRawDeviceOn(nil, addr, tlsConf, user, token, device)
}

// newRawDeviceOn is newRawDevice over tr, when it is not nil: a test that
// closes tr's socket makes the device vanish without a CONNECTION_CLOSE.
func newRawDeviceOn(tr *quic.Transport, addr string, tlsConf *tls.Config, user, token, device string) (*rawDevice, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	tc := tlsConf.Clone()
	tc.NextProtos = []string{client.ALPN}
	qconf := &quic.Config{
		MaxIdleTimeout:        30 * time.Second,
		KeepAlivePeriod:       5 * time.Second,
		MaxIncomingStreams:    1000,
		MaxIncomingUniStreams: -1,
	}
	var qc *quic.Conn
	var err error
	if tr == nil {
		qc, err = quic.DialAddr(ctx, addr, tc, qconf)
	} else {
		var udpAddr *net.UDPAddr
		if udpAddr, err = net.ResolveUDPAddr("udp", addr); err == nil {
			qc, err = tr.Dial(ctx, udpAddr, tc, qconf)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("raw dial %s/%s: %w", user, device, err)
	}
	d := &rawDevice{user: user, qc: qc, convs: make(map[string][]*qimpb.Message)}
	fail := func(format string, args ...any) (*rawDevice, error) {
		qc.CloseWithError(quic.ApplicationErrorCode(qimpb.Code_CLOSED), "")
		return nil, fmt.Errorf("raw %s/%s: "+format, append([]any{user, device}, args...)...)
	}
	ctl, err := qc.OpenStreamSync(ctx)
	if err != nil {
		return fail("open control stream: %v", err)
	}
	frame, _ := qimpb.EncodeFrame(qimpb.CommandType_CONNECT, &qimpb.Connect{Org: "demo", Appkey: "demo", User: user, Token: token, Device: device})
	if _, err := ctl.Write(frame); err != nil {
		return fail("write CONNECT: %v", err)
	}
	r := bufio.NewReader(ctl)
	var cmd qimpb.Command
	if _, err := qimpb.ReadFrame(r, qimpb.DefaultMaxFrame, nil, &cmd); err != nil {
		return fail("read CONNECT answer: %v", err)
	}
	var resp qimpb.Response
	if cmd.Command != qimpb.CommandType_RESPONSE || proto.Unmarshal(cmd.Payload, &resp) != nil || resp.Code != 0 {
		return fail("CONNECT refused: %v", &cmd)
	}
	d.wg.Add(2)
	go func() {
		defer d.wg.Done()
		// Keep reading the control stream; a DISCONNECT is a problem.
		for {
			if _, err := qimpb.ReadFrame(r, qimpb.DefaultMaxFrame, nil, &cmd); err != nil {
				return
			}
			d.problem("control stream: %v", &cmd)
		}
	}()
	go d.acceptLoop()
	return d, nil
}

func (d *rawDevice) problem(format string, args ...any) {
	d.mu.Lock()
	d.bad = append(d.bad, fmt.Sprintf(format, args...))
	d.mu.Unlock()
}

// acceptLoop serves the streams the server opens. It runs in its own
// goroutine.
func (d *rawDevice) acceptLoop() {
	defer d.wg.Done()
	for {
		str, err := d.qc.AcceptStream(d.qc.Context())
		if err != nil {
			return
		}
		d.wg.Add(1)
		go d.readStream(str)
	}
}

// readStream records pushed messages and acknowledges them. It is the
// stream's only reader and only writer. When the server finishes the
// stream, it finishes its side too, as PROTOCOL.md 3.3 asks.
func (d *rawDevice) readStream(str *quic.Stream) {
	defer d.wg.Done()
	r := bufio.NewReader(str)
	var buf []byte
	for {
		var cmd qimpb.Command
		var err error
		if buf, err = qimpb.ReadFrame(r, 1<<20, buf, &cmd); err != nil {
			if errors.Is(err, io.EOF) {
				str.Close()
			}
			return
		}
		var req qimpb.Request
		var m qimpb.Message
		if cmd.Command != qimpb.CommandType_REQUEST || proto.Unmarshal(cmd.Payload, &req) != nil ||
			req.Type != qimpb.RequestType_MESSAGE || proto.Unmarshal(req.Payload, &m) != nil {
			d.problem("stream %d: unexpected frame %v", str.StreamID(), &cmd)
			continue
		}
		if req.RequestId != m.Seq {
			d.problem("push of seq %d has request_id %d", m.Seq, req.RequestId)
		}
		conv := convKey(&m)
		d.mu.Lock()
		d.convs[conv] = append(d.convs[conv], &m)
		d.mu.Unlock()
		d.total.Add(1)
		if m.Seq == 0 || d.holdAcks.Load() {
			continue
		}
		frame, _ := qimpb.EncodeFrame(qimpb.CommandType_RESPONSE, &qimpb.Response{Code: int32(qimpb.Code_OK), RequestId: m.Seq})
		if _, err := str.Write(frame); err != nil {
			// STOP_SENDING: the server ends the stream; read on to its FIN
			// (PROTOCOL.md 3.3), where what is unacknowledged comes again
			// on another stream.
			continue
		}
	}
}

// count returns how many messages of conv arrived.
func (d *rawDevice) count(conv string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.convs[conv])
}

// messages returns a copy of what arrived for conv, in arrival order.
func (d *rawDevice) messages(conv string) []*qimpb.Message {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.convs[conv])
}

// waitFor waits until at least want[conv] messages arrived for every conv,
// then a little longer, to catch any extra ones.
func (d *rawDevice) waitFor(t testing.TB, want map[string]int, timeout time.Duration) {
	t.Helper()
	missing := func() string {
		var s string
		for conv, n := range want {
			if got := d.count(conv); got < n {
				s += fmt.Sprintf(" %s: %d of %d;", conv, got, n)
			}
		}
		return d.user + " raw device:" + s
	}
	eventually(t, timeout, missing, func() bool { return missing() == d.user+" raw device:" })
	time.Sleep(300 * time.Millisecond)
	d.checkProblems(t)
}

// checkProblems reports what the device found odd in the server's frames.
func (d *rawDevice) checkProblems(t testing.TB) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range d.bad {
		t.Errorf("%s raw device: %s", d.user, p)
	}
}

func (d *rawDevice) close() {
	d.qc.CloseWithError(quic.ApplicationErrorCode(qimpb.Code_CLOSED), "done")
	d.wg.Wait()
}

// writeFrame writes one frame on str.
func writeFrame(t testing.TB, str *quic.Stream, ct qimpb.CommandType, m proto.Message) {
	t.Helper()
	frame, err := qimpb.EncodeFrame(ct, m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := str.Write(frame); err != nil {
		t.Fatalf("write %v: %v", ct, err)
	}
}

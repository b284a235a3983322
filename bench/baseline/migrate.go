package baseline

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/quic-go/quic-go"
)

// MigrateResult is what a Migrate load measured.
type MigrateResult struct {
	// Switches holds, for each switch, the time from adding the new path
	// (Conn.AddPath) to reading the first echo after switching to it:
	// probing the path, switching, and one round trip on it.
	Switches []time.Duration
	// AfterSwitch holds, for each switch, the time from Path.Switch to
	// that echo: the switch without the probe.
	AfterSwitch []time.Duration
	// Median and MedianAfterSwitch are the medians of the two.
	Median, MedianAfterSwitch time.Duration
}

// probeTimeout bounds the probe of one path.
const probeTimeout = 5 * time.Second

// Migrate runs a migration load against the baseline server at addr: one
// connection, from a socket on localA, with one stream in mode 'E'. n
// times, it opens a socket on the other of localA and localB (local IPs,
// e.g. 127.0.0.2 and 127.0.0.3; or host:port), adds a path on a new
// Transport over it, probes the path, switches to it, closes the path it
// left and measures the time to the first echo read after switching.
// Every Transport stays open until Migrate returns: closing one that a
// connection has used closes the connection, so n, which is how many
// sockets Migrate opens, should stay small.
func Migrate(ctx context.Context, addr string, tlsConf *tls.Config, n int, localA, localB string) (MigrateResult, error) {
	if tlsConf == nil {
		return MigrateResult{}, errors.New("baseline: migrate: no TLS configuration")
	}
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return MigrateResult{}, fmt.Errorf("baseline: resolve %s: %w", addr, err)
	}
	var (
		socks []*net.UDPConn
		trs   []*quic.Transport
	)
	defer func() {
		for _, tr := range trs {
			tr.Close()
		}
		for _, pc := range socks {
			pc.Close()
		}
	}()
	open := func(local string) (*quic.Transport, error) {
		pc, err := listenUDP(local)
		if err != nil {
			return nil, fmt.Errorf("baseline: migrate: %w", err)
		}
		socks = append(socks, pc)
		trs = append(trs, &quic.Transport{Conn: pc})
		return trs[len(trs)-1], nil
	}

	tr, err := open(localA)
	if err != nil {
		return MigrateResult{}, err
	}
	qc, err := tr.Dial(ctx, raddr, clientTLS(tlsConf), clientQUICConfig())
	if err != nil {
		return MigrateResult{}, fmt.Errorf("baseline: migrate: dial: %w", err)
	}
	defer qc.CloseWithError(codeOK, "")
	stop := context.AfterFunc(ctx, func() { qc.CloseWithError(codeOK, "") }) // unblocks the echo
	defer stop()
	str, err := qc.OpenStreamSync(ctx)
	if err != nil {
		return MigrateResult{}, fmt.Errorf("baseline: migrate: open stream: %w", err)
	}
	e := newEchoer(str)
	if err := e.roundTrip(); err != nil {
		return MigrateResult{}, fmt.Errorf("baseline: migrate: before the first switch: %w", err)
	}

	var res MigrateResult
	var left *quic.Path // nil while on the dialed path, which has none
	for i := range n {
		local := localB
		if i%2 == 1 {
			local = localA
		}
		tr, err := open(local)
		if err != nil {
			return MigrateResult{}, err
		}
		path, afterSwitch, total, err := switchPath(ctx, qc, tr, left, e)
		if err != nil {
			return MigrateResult{}, fmt.Errorf("baseline: migrate: switch %d, to %s: %w", i+1, local, err)
		}
		left = path
		res.Switches = append(res.Switches, total)
		res.AfterSwitch = append(res.AfterSwitch, afterSwitch)
	}
	res.Median = quantileOf(slices.Clone(res.Switches), 0.5)
	res.MedianAfterSwitch = quantileOf(slices.Clone(res.AfterSwitch), 0.5)
	return res, nil
}

// switchPath moves qc from the path left (nil for the dialed path) to a
// new path on tr, closes left, and does one echo round trip. It returns the
// new path, the time from Switch to the echo, and the time from AddPath to
// the echo.
//
// quic-go applies Switch the next time its run loop wakes; closing left
// wakes it, as the qim client does, and so does the echo's write. A frame
// written while the loop is in the middle of an iteration may still leave
// on the old path (and be sent again on the new one): the echo measured
// then came back over the old path. The server-side test counts how often.
func switchPath(ctx context.Context, qc *quic.Conn, tr *quic.Transport, left *quic.Path, e *echoer) (*quic.Path, time.Duration, time.Duration, error) {
	start := time.Now()
	path, err := qc.AddPath(tr)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("add path: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	err = path.Probe(pctx)
	cancel()
	if err != nil {
		path.Close()
		return nil, 0, 0, fmt.Errorf("probe: %w", err)
	}
	switched := time.Now()
	if err := path.Switch(); err != nil {
		path.Close()
		return nil, 0, 0, fmt.Errorf("switch: %w", err)
	}
	if left != nil {
		left.Close()
	}
	if err := e.roundTrip(); err != nil {
		return nil, 0, 0, err
	}
	end := time.Now()
	return path, end.Sub(switched), end.Sub(start), nil
}

// echoer does echo round trips, one frame at a time, on a stream in mode
// 'E'. It writes the mode byte with its first frame.
type echoer struct {
	str  *quic.Stream
	r    *bufio.Reader
	w    *bufio.Writer
	body []byte
	seq  uint64
}

func newEchoer(str *quic.Stream) *echoer {
	e := &echoer{str: str, r: bufio.NewReaderSize(str, 512), w: bufio.NewWriterSize(str, 512), body: make([]byte, 100)}
	copy(e.body[minFrame:], padding(len(e.body)))
	e.w.WriteByte(modeEcho)
	return e
}

// roundTrip writes one frame and reads its echo.
func (e *echoer) roundTrip() error {
	binary.LittleEndian.PutUint64(e.body, e.seq)
	e.w.Write(appendFrame(e.w.AvailableBuffer(), e.body))
	if err := e.w.Flush(); err != nil {
		return fmt.Errorf("write echo: %w", err)
	}
	back, err := readFrame(e.r, nil)
	if err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if !bytes.Equal(back, e.body) {
		return fmt.Errorf("echo %d came back altered", e.seq)
	}
	e.seq++
	return nil
}

package baseline

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/time/rate"
)

// EchoOptions shapes an Echo load.
type EchoOptions struct {
	// Conns is the number of connections, each with one stream. Zero
	// means 1.
	Conns int
	// Window is the number of frames each stream keeps in flight. Zero
	// means 1.
	Window int
	// Size is the size of a frame's body in bytes, at least 16 (a sequence
	// number and the send time). Zero means 100.
	Size int
	// Duration is the measured period. Zero means 1 second.
	Duration time.Duration
	// Warmup is the period before it, not measured. Zero means 500 ms; a
	// negative Warmup means none.
	Warmup time.Duration
	// Rate, if positive, paces the load at Rate frames per second in all,
	// spread evenly over the connections (open loop, Window still bounding
	// the frames in flight), as qim bench pair --rate does.
	Rate float64
}

// EchoResult is what an Echo load measured.
type EchoResult struct {
	Msgs    int64         // echoes received during the measured period
	Elapsed time.Duration // the measured period
	// P50, P99 and P999 are percentiles of the time from writing a frame
	// to reading its echo, over the echoes counted in Msgs, within 1.6%.
	P50, P99, P999 time.Duration
}

// Rate returns echoes received per second.
func (r EchoResult) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Msgs) / r.Elapsed.Seconds()
}

// minFrame is the smallest frame body of the loads: a sequence number and
// a send time, 8 bytes each.
const minFrame = 16

// Echo runs an echo load against the baseline server at addr: opts.Conns
// connections, each on a UDP socket of its own (like that many devices)
// and set up 32 at a time, each tried up to 3 times. Each has one stream
// in mode 'E', where a writer goroutine keeps opts.Window frames in flight
// and a reader goroutine reads their echoes. A frame carries its sequence
// number and send time; the reader checks that every echo comes back whole
// and in order, and records its latency. After the measured period the
// writers finish their streams, and the readers read every echo still in
// flight before Echo returns.
func Echo(ctx context.Context, addr string, tlsConf *tls.Config, opts EchoOptions) (EchoResult, error) {
	opts.Conns = cmp.Or(opts.Conns, 1)
	opts.Window = cmp.Or(opts.Window, 1)
	opts.Size = cmp.Or(opts.Size, 100)
	opts.Duration = cmp.Or(opts.Duration, time.Second)
	opts.Warmup = cmp.Or(opts.Warmup, 500*time.Millisecond)
	if opts.Size < minFrame || opts.Size > maxFrame {
		return EchoResult{}, fmt.Errorf("baseline: echo: frame size %d out of [%d, %d]", opts.Size, minFrame, maxFrame)
	}
	trs, err := newTransports(opts.Conns, addr, "", tlsConf)
	if err != nil {
		return EchoResult{}, err
	}
	defer trs.close()

	streams := make([]*quic.Stream, opts.Conns)
	err = forEach(ctx, opts.Conns, maxDialing, func(ctx context.Context, i int) error {
		return retry(ctx, func(ctx context.Context) error {
			qc, err := trs.dial(ctx)
			if err != nil {
				return err
			}
			if streams[i], err = qc.OpenStreamSync(ctx); err != nil {
				qc.CloseWithError(codeOK, "")
			}
			return err
		})
	})
	if err != nil {
		return EchoResult{}, fmt.Errorf("baseline: echo: %w", err)
	}

	run, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(run, trs.closeConns) // unblocks every read and write
	defer stop()
	c := echoClock{start: time.Now()}
	c.from = max(opts.Warmup, 0)
	c.to = c.from + opts.Duration
	hists := make([]histogram, opts.Conns)
	counts := make([]int64, opts.Conns)
	var wg sync.WaitGroup
	for i, str := range streams {
		wg.Go(func() {
			var err error
			counts[i], err = echoStream(run, str, opts, c, &hists[i])
			if err != nil {
				cancel(fmt.Errorf("baseline: echo: connection %d: %w", i, err))
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return EchoResult{}, fmt.Errorf("baseline: echo: %w", context.Cause(ctx))
	}
	if err := context.Cause(run); err != nil {
		return EchoResult{}, err
	}
	res := EchoResult{Elapsed: opts.Duration}
	var all histogram
	for i := range hists {
		all.merge(&hists[i])
		res.Msgs += counts[i]
	}
	res.P50, res.P99, res.P999 = all.quantile(0.50), all.quantile(0.99), all.quantile(0.999)
	return res, nil
}

// echoClock is the time line of an echo load: durations since start, which
// frames carry as their send time. Echoes read in [from, to) are measured;
// writers stop at to.
type echoClock struct {
	start    time.Time
	from, to time.Duration
}

func (c echoClock) now() time.Duration { return time.Since(c.start) }

// echoStream runs one stream of an echo load: it writes the mode byte and
// frames from a goroutine of its own until c.to, reads the echoes, and
// returns how many it read in the measured period, their latencies
// recorded in h.
func echoStream(ctx context.Context, str *quic.Stream, opts EchoOptions, c echoClock, h *histogram) (int64, error) {
	window := make(chan struct{}, opts.Window) // a token per frame in flight
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var sent uint64
	writeErr := make(chan error, 1)
	go func() {
		var err error
		var lim *rate.Limiter
		if opts.Rate > 0 {
			lim = rate.NewLimiter(rate.Limit(opts.Rate/float64(opts.Conns)), 1)
		}
		sent, err = writeEchoes(wctx, str, opts.Size, window, lim, c)
		writeErr <- err
	}()
	// fail stops the writer, wherever it waits, before returning err.
	fail := func(err error) (int64, error) {
		cancel(err)
		str.CancelWrite(0)
		<-writeErr
		return 0, err
	}

	r := bufio.NewReaderSize(str, ioBufferSize)
	pad := padding(opts.Size)
	var (
		buf   []byte
		read  uint64
		count int64
	)
	for {
		body, err := readFrame(r, buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			return fail(fmt.Errorf("read echo: %w", err))
		}
		buf = body
		now := c.now()
		if len(body) != opts.Size || binary.LittleEndian.Uint64(body) != read || !bytes.Equal(body[minFrame:], pad) {
			return fail(fmt.Errorf("echo %d came back altered or out of order", read))
		}
		read++
		if now >= c.from && now < c.to {
			count++
			h.record(now - time.Duration(binary.LittleEndian.Uint64(body[8:])))
		}
		<-window
	}
	if err := <-writeErr; err != nil {
		return 0, err
	}
	if read != sent {
		return 0, fmt.Errorf("%d frames sent, %d echoes read", sent, read)
	}
	return count, nil
}

// writeEchoes writes the mode byte and then frames while it holds a token
// of window, until c.to; then it finishes the stream. It flushes whenever
// it would wait for a token, and returns how many frames it wrote.
func writeEchoes(ctx context.Context, str *quic.Stream, size int, window chan struct{}, lim *rate.Limiter, c echoClock) (uint64, error) {
	w := bufio.NewWriterSize(str, ioBufferSize)
	w.WriteByte(modeEcho)
	body := make([]byte, size)
	copy(body[minFrame:], padding(size))
	var seq uint64
	for {
		select {
		case window <- struct{}{}:
		default:
			if err := w.Flush(); err != nil {
				return seq, err
			}
			select {
			case window <- struct{}{}:
			case <-ctx.Done():
				return seq, context.Cause(ctx)
			}
		}
		if lim != nil {
			if err := w.Flush(); err != nil {
				return seq, err
			}
			if err := lim.Wait(ctx); err != nil {
				return seq, context.Cause(ctx)
			}
		}
		now := c.now()
		if now >= c.to {
			break
		}
		binary.LittleEndian.PutUint64(body, seq)
		binary.LittleEndian.PutUint64(body[8:], uint64(now))
		w.Write(appendFrame(w.AvailableBuffer(), body))
		seq++
	}
	if err := w.Flush(); err != nil {
		return seq, err
	}
	return seq, str.Close()
}

// padding returns the bytes after the sequence number and send time of a
// frame body of size bytes: a pattern the echo must return unchanged.
func padding(size int) []byte {
	p := make([]byte, size-minFrame)
	for i := range p {
		p[i] = byte('a' + i%26)
	}
	return p
}

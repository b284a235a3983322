package baseline

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
)

// HandshakeOptions shapes a Handshakes load.
type HandshakeOptions struct {
	// Concurrency is the number of handshakes in progress at once. Zero
	// means 1.
	Concurrency int
	// Duration is how long new handshakes start. Zero means 1 second.
	Duration time.Duration
	// Size is the size of the hello frame's body in bytes. Zero means 100.
	Size int
}

// HandshakeResult is what a Handshakes load measured.
type HandshakeResult struct {
	Count   int64         // connections that did the hello round trip
	Elapsed time.Duration // from the first start to the last end
}

// Rate returns connections per second.
func (r HandshakeResult) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Count) / r.Elapsed.Seconds()
}

// Handshakes runs a connection load against the baseline server at addr:
// opts.Concurrency workers, each on a UDP socket of its own, repeatedly
// make a full handshake (no session resumption, no 0-RTT, no address
// validation token), open a stream in mode 'H', write a hello frame, read
// it back, and close the connection; new connections start during
// opts.Duration and those in progress then finish. The first failure ends
// the load with an error.
func Handshakes(ctx context.Context, addr string, tlsConf *tls.Config, opts HandshakeOptions) (HandshakeResult, error) {
	opts.Concurrency = cmp.Or(opts.Concurrency, 1)
	opts.Duration = cmp.Or(opts.Duration, time.Second)
	opts.Size = cmp.Or(opts.Size, 100)
	if opts.Size < 0 || opts.Size > maxFrame {
		return HandshakeResult{}, fmt.Errorf("baseline: handshakes: frame size %d out of [0, %d]", opts.Size, maxFrame)
	}
	trs, err := newTransports(opts.Concurrency, addr, "", tlsConf)
	if err != nil {
		return HandshakeResult{}, err
	}
	defer trs.close()
	hello := appendFrame([]byte{modeHello}, bytes.Repeat([]byte{'h'}, opts.Size))

	run, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	start := time.Now()
	end := start.Add(opts.Duration)
	var count atomic.Int64
	var wg sync.WaitGroup
	for _, tr := range trs.trs {
		wg.Go(func() {
			for time.Now().Before(end) && run.Err() == nil {
				if err := handshake(run, trs, tr, hello); err != nil {
					cancel(fmt.Errorf("baseline: handshakes: %w", err))
					return
				}
				count.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := context.Cause(run); err != nil {
		return HandshakeResult{}, err
	}
	return HandshakeResult{Count: count.Load(), Elapsed: elapsed}, nil
}

// handshake makes one connection on tr, does the hello round trip and
// closes the connection.
func handshake(ctx context.Context, trs *transports, tr *quic.Transport, hello []byte) error {
	qc, err := trs.dialOn(ctx, tr)
	if err != nil {
		return err
	}
	defer qc.CloseWithError(codeOK, "")
	stop := context.AfterFunc(ctx, func() { qc.CloseWithError(codeOK, "") }) // unblocks the read
	defer stop()
	str, err := qc.OpenStreamSync(ctx)
	if err != nil {
		return fmt.Errorf("open stream: %w", err)
	}
	if _, err := str.Write(hello); err != nil {
		return fmt.Errorf("write hello: %w", err)
	}
	back, err := readFrame(bufio.NewReaderSize(str, 512), nil)
	if err != nil {
		return fmt.Errorf("read hello: %w", err)
	}
	if !bytes.Equal(appendFrame([]byte{modeHello}, back), hello) {
		return fmt.Errorf("hello came back altered")
	}
	return nil
}

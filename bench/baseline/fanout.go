package baseline

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
)

// FanoutOptions shapes a Fanout load.
type FanoutOptions struct {
	// Subscribers is the number of subscriber connections. Zero means 1.
	Subscribers int
	// Messages is the number of frames published. Zero means 100.
	Messages int
	// Window, if positive, is the number of published frames not yet
	// received by every subscriber that the publisher allows before it
	// waits. Zero means no window: the publisher sends as fast as QUIC flow
	// control and the server's queues allow.
	Window int
	// Size is the size of a frame's body in bytes, at least 16. Zero means
	// 100.
	Size int
}

// FanoutResult is what a Fanout load measured.
type FanoutResult struct {
	Deliveries int64         // frames received, by all subscribers together
	Elapsed    time.Duration // from the first send to the last receipt
	Setup      time.Duration // connecting and subscribing, before Elapsed
	// P50 and P99 are percentiles, over the messages, of the time from
	// sending one to its receipt by the last of the subscribers. Without a
	// window they include the time a message waited in the server's
	// queues behind the ones sent before it.
	P50, P99 time.Duration
}

// Rate returns deliveries per second.
func (r FanoutResult) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Deliveries) / r.Elapsed.Seconds()
}

// Fanout runs a fan-out load against the baseline server at addr: it
// connects opts.Subscribers subscribers to a channel of its own (32 at a
// time, each tried up to 3 times) and one publisher, which sends
// opts.Messages frames.
//
// Pacing: by default the publisher writes as fast as QUIC flow control
// lets it, and the server, which waits whenever a subscriber's queue is
// full, paces it by the slowest subscriber: the throughput is the
// transport's ceiling, and the latencies include queueing. With a
// positive opts.Window, the publisher keeps at most that many messages in
// flight, a message leaving the window once every subscriber has received
// it, so that the latencies are those of delivery; on 2 cores, 1,000
// subscribers need a window of some 64 messages for the throughput to come
// near the ceiling.
//
// The subscribers share 64 UDP sockets (quic-go demultiplexes a socket's
// connections by connection ID, so 10,000 subscribers need neither 10,000
// sockets nor 10,000 file descriptors); the publisher has its own. Each
// subscriber checks that it receives every message exactly once, in
// order, and whole.
func Fanout(ctx context.Context, addr string, tlsConf *tls.Config, opts FanoutOptions) (FanoutResult, error) {
	opts.Subscribers = cmp.Or(opts.Subscribers, 1)
	opts.Messages = cmp.Or(opts.Messages, 100)
	opts.Size = cmp.Or(opts.Size, 100)
	if opts.Size < minFrame || opts.Size > maxFrame {
		return FanoutResult{}, fmt.Errorf("baseline: fanout: frame size %d out of [%d, %d]", opts.Size, minFrame, maxFrame)
	}
	trs, err := newTransports(min(opts.Subscribers, sharedTransports), addr, "", tlsConf)
	if err != nil {
		return FanoutResult{}, err
	}
	defer trs.close()
	pubTrs, err := newTransports(1, addr, "", tlsConf)
	if err != nil {
		return FanoutResult{}, err
	}
	defer pubTrs.close()
	name := channelName()

	setupStart := time.Now()
	subs := make([]*bufio.Reader, opts.Subscribers)
	err = forEach(ctx, opts.Subscribers, maxDialing, func(ctx context.Context, i int) error {
		return retry(ctx, func(ctx context.Context) error {
			var err error
			subs[i], err = subscribe(ctx, trs, name)
			return err
		})
	})
	if err != nil {
		return FanoutResult{}, fmt.Errorf("baseline: fanout: subscribe: %w", err)
	}
	pub, err := pubTrs.dial(ctx)
	if err != nil {
		return FanoutResult{}, fmt.Errorf("baseline: fanout: publisher: %w", err)
	}
	pubStr, err := pub.OpenStreamSync(ctx)
	if err != nil {
		return FanoutResult{}, fmt.Errorf("baseline: fanout: publisher: %w", err)
	}
	setup := time.Since(setupStart)

	run, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(run, func() { // unblocks every read and write
		trs.closeConns()
		pubTrs.closeConns()
	})
	defer stop()

	f := &fanoutRun{
		opts:   opts,
		start:  time.Now(),
		counts: make([]atomic.Int32, opts.Messages),
		done:   make([]time.Duration, opts.Messages),
		lat:    make([]time.Duration, opts.Messages),
	}
	if opts.Window > 0 {
		f.window = make(chan struct{}, opts.Window)
	}
	var wg sync.WaitGroup
	for i, r := range subs {
		wg.Go(func() {
			if err := f.receive(r); err != nil {
				cancel(fmt.Errorf("baseline: fanout: subscriber %d: %w", i, err))
			}
		})
	}
	if err := f.publish(run, pubStr, name); err != nil {
		cancel(fmt.Errorf("baseline: fanout: publish: %w", err))
	}
	wg.Wait()
	if ctx.Err() != nil {
		var n int64
		for i := range f.counts {
			n += int64(f.counts[i].Load())
		}
		return FanoutResult{}, fmt.Errorf("baseline: fanout: %d of %d deliveries: %w", n, int64(opts.Subscribers)*int64(opts.Messages), context.Cause(ctx))
	}
	if err := context.Cause(run); err != nil {
		return FanoutResult{}, err
	}
	return FanoutResult{
		Deliveries: int64(opts.Subscribers) * int64(opts.Messages),
		Elapsed:    slices.Max(f.done) - f.firstSend,
		Setup:      setup,
		P50:        quantileOf(f.lat, 0.50),
		P99:        quantileOf(f.lat, 0.99),
	}, nil
}

// subscribe connects one subscriber to the channel name and returns its
// stream's reader once the server has confirmed the subscription.
func subscribe(ctx context.Context, trs *transports, name string) (*bufio.Reader, error) {
	qc, err := trs.dial(ctx)
	if err != nil {
		return nil, err
	}
	str, err := qc.OpenStreamSync(ctx)
	if err == nil {
		_, err = str.Write(appendFrame([]byte{modeSubscribe}, []byte(name)))
	}
	var r *bufio.Reader
	if err == nil {
		// A subscriber reads a window of small frames at a time; a small
		// buffer keeps 10,000 of them cheap.
		r = bufio.NewReaderSize(str, 2048)
		deadline, _ := ctx.Deadline()
		str.SetReadDeadline(deadline)
		var ack []byte
		if ack, err = readFrame(r, nil); err == nil && len(ack) != 0 {
			err = fmt.Errorf("subscription answered with %d bytes, want 0", len(ack))
		}
		str.SetReadDeadline(time.Time{})
	}
	if err != nil {
		qc.CloseWithError(codeOK, "")
		return nil, err
	}
	return r, nil
}

// fanoutRun is the state of a fan-out load, shared by the publisher and
// the subscribers' goroutines.
type fanoutRun struct {
	// Static.
	opts   FanoutOptions
	start  time.Time     // the time line: frames carry durations since start
	window chan struct{} // a token per message not yet received by every subscriber; nil without a window

	firstSend time.Duration // written by publish, read after it returns

	counts []atomic.Int32 // by message: subscribers that received it
	// By message, written by the subscriber that received it last, read
	// once every subscriber has returned: when that was, and how long after
	// it was sent.
	done, lat []time.Duration
}

// publish writes the mode byte, the channel's name and then the messages,
// each, with a window, while it holds a token of it. It flushes whenever
// it would wait for a token.
func (f *fanoutRun) publish(ctx context.Context, str *quic.Stream, name string) error {
	w := bufio.NewWriterSize(str, ioBufferSize)
	w.Write(appendFrame([]byte{modePublish}, []byte(name)))
	body := make([]byte, f.opts.Size)
	copy(body[minFrame:], padding(f.opts.Size))
	for seq := range f.opts.Messages {
		if err := f.acquire(ctx, w); err != nil {
			return err
		}
		now := time.Since(f.start)
		if seq == 0 {
			f.firstSend = now
		}
		binary.LittleEndian.PutUint64(body, uint64(seq))
		binary.LittleEndian.PutUint64(body[8:], uint64(now))
		w.Write(appendFrame(w.AvailableBuffer(), body))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return str.Close()
}

// acquire takes a token of the window, if there is one, flushing w first
// when it has to wait.
func (f *fanoutRun) acquire(ctx context.Context, w *bufio.Writer) error {
	if f.window == nil {
		return nil
	}
	select {
	case f.window <- struct{}{}:
		return nil
	default:
	}
	if err := w.Flush(); err != nil {
		return err
	}
	select {
	case f.window <- struct{}{}:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// receive reads the messages of one subscriber, checking that each comes
// once, in order and whole. The subscriber that receives a message last
// records when, and releases its token of the window.
func (f *fanoutRun) receive(r *bufio.Reader) error {
	pad := padding(f.opts.Size)
	var buf []byte
	for seq := range f.opts.Messages {
		body, err := readFrame(r, buf)
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return fmt.Errorf("read message %d: %w", seq, err)
		}
		buf = body
		if len(body) != f.opts.Size || !bytes.Equal(body[minFrame:], pad) {
			return fmt.Errorf("message %d came altered", seq)
		}
		if got := binary.LittleEndian.Uint64(body); got != uint64(seq) {
			return fmt.Errorf("got message %d, want %d", got, seq)
		}
		if f.counts[seq].Add(1) == int32(f.opts.Subscribers) {
			now := time.Since(f.start)
			f.done[seq] = now
			f.lat[seq] = now - time.Duration(binary.LittleEndian.Uint64(body[8:]))
			if f.window != nil {
				<-f.window
			}
		}
	}
	return nil
}

// channelName returns a name no other load uses.
func channelName() string {
	b := make([]byte, 8)
	rand.Read(b)
	return "fanout-" + hex.EncodeToString(b)
}

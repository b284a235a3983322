package upload

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/qim-im/qim/blob"
)

// Reader yields the bytes of an underlying reader that must hold exactly
// size bytes, and fails instead of yielding them all when it holds fewer or
// more, when it fails, or when a context ends. It learns that the stream is
// too long before it hands over the last byte: a consumer that stores what
// it reads (an upload) therefore never receives a complete body from a
// stream of the wrong length. Once Read has failed it keeps returning the
// same error.
//
// A Reader is not safe for concurrent use, like most readers.
type Reader struct {
	ctx  context.Context
	r    io.Reader
	size int64

	left   int64 // bytes still to hand over
	probed bool  // the underlying reader was checked to end after size bytes
	err    error // sticky
}

// NewReader returns a Reader of exactly size bytes from r, which checks ctx
// before every read. A negative size fails on the first Read with
// blob.ErrSize.
func NewReader(ctx context.Context, r io.Reader, size int64) *Reader {
	return &Reader{ctx: ctx, r: r, size: size, left: size}
}

// Read implements io.Reader. It returns io.EOF after exactly size bytes, and
// otherwise an error that wraps blob.ErrSize, the context's error, or the
// underlying reader's error.
func (e *Reader) Read(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	if err := e.ctx.Err(); err != nil {
		return 0, e.fail(err)
	}
	if e.size < 0 {
		return 0, e.fail(fmt.Errorf("%w: negative size %d", blob.ErrSize, e.size))
	}
	if e.left == 0 {
		if err := e.probe(); err != nil {
			return 0, e.fail(err)
		}
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	switch {
	case errors.Is(err, io.EOF) && e.left > 0:
		return 0, e.fail(fmt.Errorf("%w: stream ended after %d of %d bytes", blob.ErrSize, e.size-e.left, e.size))
	case err != nil && !errors.Is(err, io.EOF):
		return 0, e.fail(err)
	}
	if e.left == 0 {
		// Hold the last bytes back until the stream is known to end here.
		if err := e.probe(); err != nil {
			return 0, e.fail(err)
		}
	}
	return n, nil
}

// probe checks, once, that the underlying reader has nothing after size
// bytes.
func (e *Reader) probe() error {
	if e.probed {
		return nil
	}
	e.probed = true
	var one [1]byte
	n, err := io.ReadFull(e.r, one[:])
	switch {
	case n > 0:
		return fmt.Errorf("%w: stream longer than %d bytes", blob.ErrSize, e.size)
	case errors.Is(err, io.EOF):
		return nil
	default:
		return err
	}
}

// Err returns the error that made Read fail, or nil.
func (e *Reader) Err() error {
	return e.err
}

func (e *Reader) fail(err error) error {
	e.err = err
	return err
}

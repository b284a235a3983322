package baseline

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/quic-go/quic-go"
)

// Application error codes the server closes connections with.
const (
	codeOK       quic.ApplicationErrorCode = 0 // expected ends
	codeProtocol quic.ApplicationErrorCode = 1 // a bad mode byte or frame
)

// ioBufferSize is the size of the echo and publish streams' buffers:
// enough for a window of small frames to be read, and written back, in one
// call.
const ioBufferSize = 16 << 10

// serveConn serves one connection: it accepts the first stream, serves it
// in the mode its first byte names, then holds the connection until the
// client closes it. It runs in the connection's own goroutine, the only one
// that reads or writes the stream.
func (s *Server) serveConn(qc *quic.Conn) {
	ctx := qc.Context()
	str, err := qc.AcceptStream(ctx)
	if err != nil {
		return
	}
	if err := s.serveStream(ctx, qc, str); err != nil && ctx.Err() == nil {
		qc.CloseWithError(codeProtocol, err.Error())
		return
	}
	<-ctx.Done()
}

// serveStream reads the mode byte and serves the stream in that mode. It
// returns nil at an expected end: the client finished its side, or closed
// the connection.
func (s *Server) serveStream(ctx context.Context, qc *quic.Conn, str *quic.Stream) error {
	// One byte straight from the stream: an idle connection holds no
	// buffer.
	var mode [1]byte
	if _, err := io.ReadFull(str, mode[:]); err != nil {
		return quietEnd(err)
	}
	var err error
	switch mode[0] {
	case modeEcho:
		err = s.echo(qc, str)
	case modeSubscribe:
		err = s.subscribe(ctx, str)
	case modePublish:
		err = s.publish(ctx, str)
	case modeIdle:
		err = s.holdIdle(ctx, str)
	case modeHello:
		err = s.hello(str)
	default:
		return fmt.Errorf("baseline: unknown mode %q", mode[0])
	}
	return quietEnd(err)
}

// echo writes every frame read back on str, flushing whenever no more input
// is buffered, and finishes its side of the stream when the client has
// finished its own.
func (s *Server) echo(qc *quic.Conn, str *quic.Stream) error {
	r := bufio.NewReaderSize(str, ioBufferSize)
	w := bufio.NewWriterSize(str, ioBufferSize)
	var buf []byte
	var prefix [binary.MaxVarintLen64]byte
	for {
		body, err := readFrame(r, buf)
		if err == io.EOF {
			if err := w.Flush(); err != nil {
				return err
			}
			return str.Close()
		}
		if err != nil {
			return fmt.Errorf("read frame: %w", err)
		}
		buf = body
		w.Write(prefix[:binary.PutUvarint(prefix[:], uint64(len(body)))])
		w.Write(body)
		if s.echoed != nil {
			s.echoed(qc.RemoteAddr())
		}
		if r.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return err
			}
		}
	}
}

// hello reads one frame and writes it back.
func (s *Server) hello(str *quic.Stream) error {
	body, err := readFrame(bufio.NewReaderSize(str, 512), nil)
	if err != nil {
		return fmt.Errorf("read hello: %w", err)
	}
	s.hellos.Add(1)
	_, err = str.Write(appendFrame(nil, body))
	return err
}

// holdIdle answers the mode byte, so that the client knows it is held, and
// holds the stream until the connection ends.
func (s *Server) holdIdle(ctx context.Context, str *quic.Stream) error {
	s.idle.Add(1)
	defer s.idle.Add(-1)
	if _, err := str.Write([]byte{modeIdle}); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

// quietEnd returns nil for the expected ends of a stream: the client
// finished or reset it, or closed the connection with code 0, or the server
// is closing it.
func quietEnd(err error) error {
	var appErr *quic.ApplicationError
	var streamErr *quic.StreamError
	switch {
	case err == nil, errors.Is(err, io.EOF):
		return nil
	case errors.As(err, &appErr) && appErr.ErrorCode == codeOK:
		return nil
	case errors.As(err, &streamErr):
		return nil
	}
	return err
}

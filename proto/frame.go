package qimpb

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/proto"
)

// Version is the protocol version this package speaks, carried in
// Command.Version.
const Version = 1

// DefaultMaxFrame is the default largest frame body, in bytes.
const DefaultMaxFrame = 64 << 10

// ErrFrameTooLarge is returned by ReadFrame when a frame's declared length
// exceeds the maximum. It is detected from the length prefix alone, before
// any of the body is read.
var ErrFrameTooLarge = errors.New("qimpb: frame too large")

// ErrBadFrame is returned by ReadFrame for a length prefix that is not a
// valid varint or a body that is not a Command.
var ErrBadFrame = errors.New("qimpb: malformed frame")

// ReadFrame reads one frame, a varint length then that many bytes, and
// decodes the bytes as a Command. A frame longer than max bytes is refused
// with ErrFrameTooLarge without reading its body. buf is reused for the body
// when it is large enough; ReadFrame returns the buffer it used so that the
// caller can pass it to the next call.
//
// io.EOF is returned only when the stream ends cleanly between frames; a
// stream that ends inside a frame gives io.ErrUnexpectedEOF.
func ReadFrame(r *bufio.Reader, max int, buf []byte, cmd *Command) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		if err == io.EOF {
			return buf, io.EOF
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return buf, io.ErrUnexpectedEOF
		}
		return buf, fmt.Errorf("%w: length: %v", ErrBadFrame, err)
	}
	if n > uint64(max) {
		return buf, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, n, max)
	}
	if uint64(cap(buf)) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return buf, err
	}
	if err := proto.Unmarshal(buf, cmd); err != nil {
		return buf, fmt.Errorf("%w: %v", ErrBadFrame, err)
	}
	return buf, nil
}

// AppendFrame appends the frame of cmd (varint length, then the encoded
// Command) to b and returns the extended slice.
func AppendFrame(b []byte, cmd *Command) ([]byte, error) {
	opts := proto.MarshalOptions{}
	size := opts.Size(cmd)
	b = binary.AppendUvarint(b, uint64(size))
	return opts.MarshalAppend(b, cmd)
}

// EncodeFrame returns the frame of a Command whose payload is msg.
func EncodeFrame(ct CommandType, msg proto.Message) ([]byte, error) {
	payload, err := proto.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("encode %v payload: %w", ct, err)
	}
	return AppendFrame(nil, &Command{Version: Version, Command: ct, Payload: payload})
}

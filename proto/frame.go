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
	n, err := readUvarint(r)
	if err != nil {
		return buf, err
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

// readUvarint reads a frame's length. Errors of the underlying reader are
// returned as they are (io.EOF only before the first byte); a varint longer
// than 10 bytes or over 64 bits is ErrBadFrame.
func readUvarint(r io.ByteReader) (uint64, error) {
	var x uint64
	var s uint
	for i := 0; i < binary.MaxVarintLen64; i++ {
		b, err := r.ReadByte()
		if err != nil {
			if i > 0 && err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
		if b < 0x80 {
			if i == binary.MaxVarintLen64-1 && b > 1 {
				break
			}
			return x | uint64(b)<<s, nil
		}
		x |= uint64(b&0x7f) << s
		s += 7
	}
	return 0, fmt.Errorf("%w: length varint overflows 64 bits", ErrBadFrame)
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
	n := proto.Size(msg)
	b, err := appendCommand(make([]byte, 0, frameSize(ct, n)), ct, msg, n)
	if err != nil {
		return nil, fmt.Errorf("encode %v: %w", ct, err)
	}
	return b, nil
}

// EncodeDatagram returns a Command whose payload is msg, encoded without a
// length: the content of one QUIC datagram (docs/PROTOCOL.md section 11.1).
func EncodeDatagram(ct CommandType, msg proto.Message) ([]byte, error) {
	payload, err := proto.Marshal(msg)
	if err == nil {
		var b []byte
		if b, err = proto.Marshal(&Command{Version: Version, Command: ct, Payload: payload}); err == nil {
			return b, nil
		}
	}
	return nil, fmt.Errorf("encode %v datagram: %w", ct, err)
}

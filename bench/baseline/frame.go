package baseline

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
)

// ALPN is the application protocol the baseline server and its clients
// negotiate. It differs from qim's, so that neither side can be mistaken for
// the other.
const ALPN = "qim-baseline"

// The modes a connection's first stream starts with, one byte.
const (
	modeEcho      = 'E' // every frame is written back
	modeSubscribe = 'S' // a fan-out subscriber; the first frame names the channel
	modePublish   = 'P' // a fan-out publisher; the first frame names the channel
	modeIdle      = 'I' // one byte back, then nothing: an idle connection
	modeHello     = 'H' // one frame back, then wait for the client to close
)

// maxFrame is the largest frame body accepted, as qim's default.
const maxFrame = 64 << 10

// readFrame reads one frame, a varint length then that many bytes, into buf
// (grown when too small) and returns the body. io.EOF means the stream ended
// cleanly between frames.
func readFrame(r *bufio.Reader, buf []byte) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, err
	}
	if n > maxFrame {
		return nil, fmt.Errorf("baseline: frame of %d bytes, limit %d", n, maxFrame)
	}
	if uint64(cap(buf)) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return buf, nil
}

// appendFrame appends the frame of body (varint length, then body) to b.
func appendFrame(b, body []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(body)))
	return append(b, body...)
}

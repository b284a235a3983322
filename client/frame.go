package client

import (
	"bufio"
	"io"

	qimpb "github.com/qim-im/qim/proto"
)

// frameReader reads the frames of one stream.
type frameReader struct {
	br  *bufio.Reader
	max int
	buf []byte
}

func newFrameReader(src io.Reader, max int) *frameReader {
	return &frameReader{br: bufio.NewReader(src), max: max}
}

// next reads one frame into cmd. It returns io.EOF when the stream ends
// between frames, and the stream's own error (a reset, a closed connection)
// as it is.
func (fr *frameReader) next(cmd *qimpb.Command) error {
	var err error
	fr.buf, err = qimpb.ReadFrame(fr.br, fr.max, fr.buf, cmd)
	return err
}

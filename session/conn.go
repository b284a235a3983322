package session

import (
	"context"
	"io"

	qimpb "github.com/qim-im/qim/proto"
)

// Stream is one bidirectional stream of a device connection, as the
// session sees it. A transport adapts its own streams to it (quicsrv wraps
// a *quic.Stream), so that another transport can carry the same frames.
// A session has one goroutine reading a Stream and one writing it; Close
// and CancelRead may be called from others.
type Stream interface {
	io.Reader
	io.Writer
	// Close finishes the send side after what was written (a QUIC FIN):
	// the device reads EOF. It does not stop the read side.
	Close() error
	// CancelRead stops the read side (a QUIC STOP_SENDING with code): the
	// session reads nothing more from the stream, and the device's writes
	// to it fail.
	CancelRead(code qimpb.Code)
}

// Conn is what a session needs of its device's connection. quicsrv
// implements it.
type Conn interface {
	// OpenStream opens a new bidirectional stream to the device, blocking
	// until the device allows one more or ctx ends.
	OpenStream(ctx context.Context) (Stream, error)
	// Disconnect tells the device why its session ends (DISCONNECT on the
	// control stream) and closes the connection with code. It does not
	// block and may be called more than once; the first call counts.
	Disconnect(code qimpb.Code, reason string)
	// WriteEvent writes an EVENT frame on the control stream, after
	// Connected. Only the session's event writer calls it; it blocks until
	// the frame is written, the connection ends, or a deadline passes
	// (a device that does not read its control stream).
	WriteEvent(frame []byte) error
	// Datagrams reports whether both sides enabled QUIC datagrams.
	Datagrams() bool
	// SendDatagram sends payload in one QUIC datagram. It may block while
	// the transport's queue is full: only the session's datagram sender
	// calls it.
	SendDatagram(payload []byte) error
	// HandshakeComplete is closed when the transport's handshake has
	// completed. Until then, what the device sent may be 0-RTT data, which
	// an attacker can replay.
	HandshakeComplete() <-chan struct{}
}

package quicsrv

import (
	"github.com/quic-go/quic-go"

	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/session"
)

// quicStream adapts a QUIC stream to session.Stream: the session's codes
// become QUIC application error codes here. It is one pointer, so a
// session.Stream holding it costs no allocation.
type quicStream struct{ *quic.Stream }

var _ session.Stream = quicStream{}

// CancelRead implements session.Stream: STOP_SENDING with code.
func (s quicStream) CancelRead(code qimpb.Code) {
	s.Stream.CancelRead(quic.StreamErrorCode(code))
}

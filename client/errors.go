package client

import (
	"errors"
	"fmt"
	"math"
	"net"

	"github.com/quic-go/quic-go"

	qimpb "github.com/qim-im/qim/proto"
)

// Error is a refusal by the server: a DISCONNECT, a RESPONSE whose code is
// not OK, or a connection the server closed with a qim code. errors.As finds
// it in every error the package returns for such a refusal.
type Error struct {
	Code   qimpb.Code
	Reason string
}

// Error returns "qim: CODE: reason", or "qim: CODE" when there is no reason.
func (e *Error) Error() string {
	if e.Reason == "" {
		return "qim: " + e.Code.String()
	}
	return "qim: " + e.Code.String() + ": " + e.Reason
}

// Is reports whether target is an *Error with the same code and, when the
// target has one, the same reason, so that
// errors.Is(err, &client.Error{Code: qimpb.Code_FORBIDDEN}) tests the code
// alone.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && (t.Reason == "" || t.Reason == e.Reason)
}

// ErrClosed is returned by the methods of a Client whose session was ended
// by Close.
var ErrClosed = errors.New("qim: client closed")

// ErrNotConnected is returned by Migrate when the connection ended before
// the new path was in use.
var ErrNotConnected = errors.New("qim: not connected")

// ErrStreamEnded is returned for a request whose stream (or, with
// Config.Reconnect, connection) ended before its RESPONSE arrived, when the
// request was not safe to retry (GROUP_CREATE, GROUP_LEAVE, GROUP_KICK, a
// MESSAGE with NoOffline) or retries ran out. Whether the server carried it
// out is unknown. (A request left unanswered when the server finished its
// stream was not run: it is sent again on a new stream, whatever it is, and
// ErrStreamEnded comes only once retries ran out.)
var ErrStreamEnded = errors.New("qim: stream ended before the response")

// errorOf returns the *Error for a non-OK code and reason.
func errorOf(code int32, reason string) *Error {
	return &Error{Code: qimpb.Code(code), Reason: reason}
}

// isConnError reports whether err is the error of a closed connection
// rather than of one stream. quic-go's connection errors (application
// close, idle timeout, stateless reset, transport errors) all wrap
// net.ErrClosed.
func isConnError(err error) bool {
	return errors.Is(err, net.ErrClosed)
}

// closeReason translates the error that closed a connection into the
// session's end reason: an *Error when the server closed it with a qim code,
// the transport error otherwise.
func closeReason(err error) error {
	var ae *quic.ApplicationError
	if errors.As(err, &ae) && ae.Remote && ae.ErrorCode <= math.MaxInt32 {
		return &Error{Code: qimpb.Code(ae.ErrorCode), Reason: ae.ErrorMessage}
	}
	return fmt.Errorf("qim: connection: %w", err)
}

// streamCode is the QUIC stream error code used to cancel a stream that
// ended with err.
func streamCode(err error) quic.StreamErrorCode {
	var qe *Error
	switch {
	case errors.Is(err, qimpb.ErrFrameTooLarge):
		return quic.StreamErrorCode(qimpb.Code_FRAME_TOO_LARGE)
	case errors.Is(err, qimpb.ErrBadFrame):
		return quic.StreamErrorCode(qimpb.Code_BAD_REQUEST)
	case errors.As(err, &qe):
		return quic.StreamErrorCode(qe.Code)
	}
	return quic.StreamErrorCode(qimpb.Code_PROTOCOL_VIOLATION)
}

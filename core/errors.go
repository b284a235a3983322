package core

import (
	"errors"
	"fmt"

	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// Error is an error a client sees: a code from the one code table and a
// reason. The hub and the device layer return *Error for every refusal;
// anything else becomes INTERNAL (or STORE_UNAVAILABLE for store failures)
// in CodeOf.
type Error struct {
	Code   qimpb.Code
	Reason string
}

func (e *Error) Error() string { return fmt.Sprintf("core: %v: %s", e.Code, e.Reason) }

// Errorf returns an *Error with a formatted reason.
func Errorf(code qimpb.Code, format string, args ...any) *Error {
	return &Error{Code: code, Reason: fmt.Sprintf(format, args...)}
}

// CodeOf maps any error to the code and reason a client is told. It is the
// one place where internal errors become wire codes; internal details are not
// revealed.
func CodeOf(err error) (qimpb.Code, string) {
	var e *Error
	switch {
	case err == nil:
		return qimpb.Code_OK, ""
	case errors.As(err, &e):
		return e.Code, e.Reason
	case errors.Is(err, errStore), errors.Is(err, store.ErrClosed):
		return qimpb.Code_STORE_UNAVAILABLE, "the store could not take the request; retry later"
	default:
		return qimpb.Code_INTERNAL, "internal error"
	}
}

// errStore marks a failed store write or read, wrapped around the cause.
var errStore = errors.New("core: store")

// StoreError marks err, returned by the store for op, as a store failure:
// CodeOf maps it to STORE_UNAVAILABLE.
func StoreError(op string, err error) error {
	return fmt.Errorf("%w: %s: %w", errStore, op, err)
}

package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/core"
	qimpb "github.com/qim-im/qim/proto"
)

// JSON mapping of the API's bodies: the .proto field names, enums by name,
// every field written (so that clients need no defaults), unknown fields
// refused.
var (
	marshalJSON   = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}
	unmarshalJSON = protojson.UnmarshalOptions{}
)

// readBody reads a request's body, at most maxBody bytes: a larger one is a
// FRAME_TOO_LARGE error.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return nil, core.Errorf(qimpb.Code_FRAME_TOO_LARGE, "request body larger than %d bytes", maxBody)
	case err != nil:
		return nil, core.Errorf(qimpb.Code_BAD_REQUEST, "read request body: %v", err)
	}
	return b, nil
}

// decodeJSON decodes a JSON body into m. An empty body is an empty message.
// It is what FuzzDecodeJSON runs.
func decodeJSON(b []byte, m proto.Message) error {
	if len(b) == 0 {
		return nil
	}
	if err := unmarshalJSON.Unmarshal(b, m); err != nil {
		return core.Errorf(qimpb.Code_BAD_REQUEST, "body does not decode as %s: %v", m.ProtoReflect().Descriptor().Name(), err)
	}
	return nil
}

// writeJSON answers with status and m as JSON.
func writeJSON(w http.ResponseWriter, status int, m proto.Message) {
	b, err := encodeJSON(m)
	if err != nil {
		b = []byte(`{"code":"INTERNAL","reason":"encode answer"}`)
		status = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// encodeJSON encodes m as compact JSON. protojson varies its white space
// from one build to another on purpose; compacting its output makes the
// answers the same bytes every time.
func encodeJSON(m proto.Message) ([]byte, error) {
	b, err := marshalJSON.Marshal(m)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeError answers with err's code (core.CodeOf), its reason, and the
// HTTP status of the code (StatusOf).
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code, reason := core.CodeOf(err)
	status := StatusOf(code)
	if status >= 500 {
		h.logger.Error("http request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	var st *statusError
	if errors.As(err, &st) {
		status = st.status
	}
	writeJSON(w, status, &qimpb.ApiError{Code: code, Reason: reason})
}

// statusError gives a refusal an HTTP status other than its code's.
type statusError struct {
	status int
	err    *core.Error
}

func (e *statusError) Error() string { return fmt.Sprintf("%d: %v", e.status, e.err) }
func (e *statusError) Unwrap() error { return e.err }

// withStatus returns err answered with an HTTP status of its own.
func withStatus(status int, err *core.Error) error { return &statusError{status, err} }

// StatusOf returns the HTTP status of an answer with code.
func StatusOf(code qimpb.Code) int {
	switch code {
	case qimpb.Code_OK:
		return http.StatusOK
	case qimpb.Code_BAD_REQUEST, qimpb.Code_INVALID_ARGUMENT, qimpb.Code_WRONG_STREAM,
		qimpb.Code_PROTOCOL_VIOLATION, qimpb.Code_UNSUPPORTED_VERSION:
		return http.StatusBadRequest
	case qimpb.Code_UNAUTHENTICATED, qimpb.Code_TOKEN_EXPIRED, qimpb.Code_AUTH_TIMEOUT:
		return http.StatusUnauthorized
	case qimpb.Code_FORBIDDEN:
		return http.StatusForbidden
	case qimpb.Code_NOT_FOUND:
		return http.StatusNotFound
	case qimpb.Code_FRAME_TOO_LARGE:
		return http.StatusRequestEntityTooLarge
	case qimpb.Code_RATE_LIMITED:
		return http.StatusTooManyRequests
	case qimpb.Code_LIMIT_EXCEEDED:
		return http.StatusConflict
	case qimpb.Code_STORE_UNAVAILABLE, qimpb.Code_GOING_AWAY:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

// notFound answers every path that is not an endpoint.
func (h *Handler) notFound(w http.ResponseWriter, r *http.Request) {
	h.writeError(w, r, core.Errorf(qimpb.Code_NOT_FOUND, "no such endpoint: %s %s", r.Method, r.URL.Path))
}

// health is GET /v1/health: a liveness check for load balancers, with no
// credentials.
func (h *Handler) health(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, &qimpb.Health{Status: "ok"})
}

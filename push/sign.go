package push

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Headers of every notification request.
const (
	// SignatureHeader carries the request's signature:
	// "t=<Unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>".
	SignatureHeader = "Qim-Signature"
	// IdempotencyHeader carries the notification's id
	// (PushNotification.id): every attempt to send one notification has
	// the same.
	IdempotencyHeader = "Idempotency-Key"
)

// DefaultTolerance is the age of a signature beyond which Verify, as
// gateways should call it, refuses it: the bound on a replay.
const DefaultTolerance = 5 * time.Minute

// Errors of Verify. Callers compare with errors.Is.
var (
	ErrNoSignature  = errors.New("push: no valid signature header")
	ErrBadSignature = errors.New("push: signature does not match")
	ErrStale        = errors.New("push: signature timestamp outside the tolerance")
)

// Sign returns the SignatureHeader value of body signed with secret at t.
func Sign(secret, body []byte, t time.Time) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

// Verify checks header, the SignatureHeader value of a request whose body
// is body, against secret: one of its v1 signatures must be the HMAC of
// its timestamp and body, and the timestamp must be within tolerance of
// now (DefaultTolerance suits most gateways; zero or less skips the check).
// A gateway calls it before it trusts a notification.
func Verify(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts string
	var sigs [][]byte
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch k {
		case "t":
			ts = v
		case "v1":
			if sig, err := hex.DecodeString(v); err == nil {
				sigs = append(sigs, sig)
			}
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return ErrNoSignature
	}
	want := mac(secret, ts, body)
	matched := false
	for _, sig := range sigs {
		matched = hmac.Equal(sig, want) || matched
	}
	if !matched {
		return ErrBadSignature
	}
	if age := now.Sub(time.Unix(sec, 0)); tolerance > 0 && (age > tolerance || age < -tolerance) {
		return fmt.Errorf("%w: signed %v ago", ErrStale, age.Round(time.Second))
	}
	return nil
}

// mac returns HMAC-SHA256(secret, ts + "." + body).
func mac(secret []byte, ts string, body []byte) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(ts))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// IdempotencyKey returns the id of the notification of message msgID of app
// (store.AppID) for user: 32 hex digits, the same at every attempt, on
// every node of a cluster.
func IdempotencyKey(app string, msgID uint64, user string) string {
	h := sha256.New()
	h.Write([]byte("qim push\x00" + app + "\x00" + strconv.FormatUint(msgID, 10) + "\x00" + user))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

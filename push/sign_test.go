package push_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/qim-im/qim/push"
)

func TestVerify(t *testing.T) {
	secret := []byte("s3cret")
	body := []byte(`{"id":"abc"}`)
	now := time.Unix(1_800_000_000, 0)
	good := push.Sign(secret, body, now)
	other := push.Sign([]byte("old secret"), body, now)
	_, otherSig, _ := strings.Cut(other, ",")
	for _, tt := range []struct {
		name   string
		header string
		body   []byte
		now    time.Time
		want   error
	}{
		{"valid", good, body, now, nil},
		{"valid, a little later", good, body, now.Add(push.DefaultTolerance), nil},
		{"valid among several signatures (rotation)", good + "," + otherSig, body, now, nil},
		{"with spaces", strings.ReplaceAll(good, ",", ", "), body, now, nil},
		{"body changed", good, []byte(`{"id":"abd"}`), now, push.ErrBadSignature},
		{"other secret", other, body, now, push.ErrBadSignature},
		{"too old", good, body, now.Add(push.DefaultTolerance + time.Second), push.ErrStale},
		{"from the future", good, body, now.Add(-push.DefaultTolerance - time.Second), push.ErrStale},
		{"timestamp changed", strings.Replace(good, "t=1800000000", "t=1800000001", 1), body, now, push.ErrBadSignature},
		{"no header", "", body, now, push.ErrNoSignature},
		{"no signature", "t=1800000000", body, now, push.ErrNoSignature},
		{"no timestamp", good[strings.Index(good, ",")+1:], body, now, push.ErrNoSignature},
		{"signature not hex", "t=1800000000,v1=zz", body, now, push.ErrNoSignature},
		{"garbage", "garbage", body, now, push.ErrNoSignature},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := push.Verify(secret, tt.header, tt.body, tt.now, push.DefaultTolerance)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Errorf("Verify(%q) = %v, want %v", tt.header, err, tt.want)
			}
		})
	}
	if err := push.Verify(secret, good, body, now.Add(time.Hour), 0); err != nil {
		t.Errorf("tolerance 0: %v, want no age check", err)
	}
}

func TestIdempotencyKey(t *testing.T) {
	k := push.IdempotencyKey("acme/chat", 42, "bob")
	if len(k) != 32 || k != push.IdempotencyKey("acme/chat", 42, "bob") {
		t.Fatalf("key %q: want 32 hex digits, the same every time", k)
	}
	for _, other := range []string{
		push.IdempotencyKey("acme/chat", 43, "bob"),
		push.IdempotencyKey("acme/chat", 42, "carol"),
		push.IdempotencyKey("acme/other", 42, "bob"),
		push.IdempotencyKey("acme/chat4", 2, "bob"),
	} {
		if other == k {
			t.Errorf("two notifications share key %q", k)
		}
	}
}

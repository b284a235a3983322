package core

import (
	"testing"

	qimpb "github.com/qim-im/qim/proto"
)

// TestRateLimit checks the per-user request limit: a burst of SendBurst,
// then RATE_LIMITED until the bucket refills; other users and the same
// user id in another application are not affected; a negative SendRate
// means no limit.
func TestRateLimit(t *testing.T) {
	h := newHub(t, Config{SendRate: 10, SendBurst: 5})
	for i := range 5 {
		if err := h.Allow("app", "alice"); err != nil {
			t.Fatalf("request %d of the burst: %v", i+1, err)
		}
	}
	wantCode(t, "beyond the burst", h.Allow("app", "alice"), qimpb.Code_RATE_LIMITED)
	if err := h.Allow("app", "bob"); err != nil {
		t.Fatalf("another user: %v", err)
	}
	if err := h.Allow("other", "alice"); err != nil {
		t.Fatalf("the same user id in another application: %v", err)
	}
	eventually(t, "alice's bucket refills", func() bool { return h.Allow("app", "alice") == nil })

	free := newHub(t, Config{SendRate: -1})
	for i := range 10_000 {
		if err := free.Allow("app", "alice"); err != nil {
			t.Fatalf("request %d without a limit: %v", i+1, err)
		}
	}
}

package httpapi

import (
	"fmt"
	"testing"
	"time"
)

// TestNonceCache checks the replay cache: a nonce is refused again within
// its time, accepted after it, and a full cache refuses new nonces (rather
// than forget live ones) until old ones expire, so it never holds more
// than its bound.
func TestNonceCache(t *testing.T) {
	const window = time.Minute
	c := newNonceCache(100)
	t0 := time.Unix(1700000000, 0)
	if !c.add("a", t0, window) {
		t.Fatal("first use refused")
	}
	if c.add("a", t0.Add(2*window-time.Second), window) {
		t.Fatal("replay within two windows accepted")
	}
	if !c.add("a", t0.Add(2*window), window) {
		t.Fatal("nonce refused after it expired")
	}
	for i := range 99 {
		if !c.add(fmt.Sprint("n", i), t0.Add(2*window), window) {
			t.Fatalf("nonce %d refused below the bound", i)
		}
	}
	if c.add("one too many", t0.Add(2*window), window) {
		t.Fatal("a full cache took a new nonce")
	}
	if len(c.seen) != 100 {
		t.Fatalf("cache holds %d nonces, bound 100", len(c.seen))
	}
	if !c.add("later", t0.Add(5*window), window) {
		t.Fatal("a full cache of expired nonces refused a new one")
	}
	if len(c.seen) != 1 {
		t.Fatalf("cache holds %d nonces after pruning, want 1", len(c.seen))
	}
}

// TestUploadQuota checks that a user's uploads are bounded per hour and
// another user's are not affected.
func TestUploadQuota(t *testing.T) {
	q, err := newUploadQuota(10 << 20)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1700000000, 0)
	for i := range 10 {
		if !q.take("o/a", "alice", 1<<20, now) {
			t.Fatalf("upload %d refused within the quota", i)
		}
	}
	if q.take("o/a", "alice", 1<<20, now) {
		t.Fatal("upload beyond the quota accepted")
	}
	if !q.take("o/a", "bob", 1<<20, now) {
		t.Fatal("another user's upload refused")
	}
	if !q.take("o/a", "alice", 1<<20, now.Add(6*time.Minute+time.Second)) {
		t.Fatal("quota not refilled after a tenth of an hour")
	}
}

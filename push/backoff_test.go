package push

import (
	"testing"
	"time"

	"github.com/qim-im/qim/store/pebblestore"
)

func TestBackoff(t *testing.T) {
	st, err := pebblestore.Open(t.TempDir(), pebblestore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	w, err := New(Config{Store: st, URL: "http://127.0.0.1:1/", Secret: []byte("s")}) // the default backoff
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		attempt    int
		retryAfter time.Duration
		lo, hi     time.Duration
	}{
		{1, 0, 500 * time.Millisecond, time.Second},
		{2, 0, time.Second, 2 * time.Second},
		{5, 0, 8 * time.Second, 16 * time.Second},
		{9, 0, 128 * time.Second, 256 * time.Second},
		{10, 0, 150 * time.Second, 5 * time.Minute},
		{1000, 0, 150 * time.Second, 5 * time.Minute},
		{1, 30 * time.Second, 30 * time.Second, 30 * time.Second},
		{1, time.Hour, 5 * time.Minute, 5 * time.Minute},
	} {
		for range 100 {
			if d := w.backoff(tt.attempt, tt.retryAfter); d < tt.lo || d > tt.hi {
				t.Fatalf("backoff(%d, %v) = %v, want %v to %v", tt.attempt, tt.retryAfter, d, tt.lo, tt.hi)
			}
		}
	}
}

package quicsrv

import (
	"net"
	"testing"
	"time"
)

// TestAuthFailureDelay checks the slow-down of failed CONNECTs: per IP
// address whatever the port, free for the first five, then doubling up to
// AuthBackoffMax, and off when AuthBackoffMax is negative.
func TestAuthFailureDelay(t *testing.T) {
	ms := time.Millisecond
	for _, tt := range []struct {
		name string
		max  time.Duration
		want []time.Duration // delays of failures 1, 2, ... from one address
	}{
		{"default", 0, []time.Duration{0, 0, 0, 0, 0, 50 * ms, 100 * ms, 200 * ms, 400 * ms, 800 * ms, 1600 * ms, 3000 * ms, 3000 * ms}},
		{"capped at 150ms", 150 * ms, []time.Duration{0, 0, 0, 0, 0, 50 * ms, 100 * ms, 150 * ms, 150 * ms}},
		{"off", -1, []time.Duration{0, 0, 0, 0, 0, 0, 0, 0}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := &Server{AuthBackoffMax: tt.max}
			for i, want := range tt.want {
				// A new port every time: the address counts, not the port.
				addr := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1000 + i}
				if got := s.authFailureDelay(addr); got != want {
					t.Fatalf("failure %d: delay %v, want %v", i+1, got, want)
				}
			}
			if got := s.authFailureDelay(&net.UDPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 1000}); got != 0 {
				t.Fatalf("another address's first failure: delay %v, want 0", got)
			}
		})
	}
}

package quicsrv

import (
	"testing"
	"time"
)

// TestLingerTime checks the bound of the wait between a DISCONNECT and the
// CONNECTION_CLOSE: three smoothed RTTs, between 100 ms and 1 s.
func TestLingerTime(t *testing.T) {
	ms := time.Millisecond
	for _, tt := range []struct {
		srtt, want time.Duration
	}{
		{0, 100 * ms},                      // no RTT sample yet
		{200 * time.Microsecond, 100 * ms}, // loopback
		{80 * ms, 240 * ms},                // a mobile network
		{400 * ms, time.Second},
	} {
		if got := lingerTime(tt.srtt); got != tt.want {
			t.Errorf("lingerTime(%v) = %v, want %v", tt.srtt, got, tt.want)
		}
	}
}

package session

import "testing"

// TestAckBeforeSentRecorded checks that an acknowledgement of a message
// handed to the writer counts even if run has not recorded it as sent yet
// (the device can be that fast), and that one beyond it does not.
func TestAckBeforeSentRecorded(t *testing.T) {
	for _, tt := range []struct {
		name      string
		ack, want uint64
	}{
		{"queued", 8, 8},
		{"last queued", 10, 10},
		{"beyond queued", 11, 5},
		{"old", 4, 5},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := &pusher{wake: make(chan struct{}, 1), ready: true, acked: 5, sent: 5, queued: 10}
			p.ack(tt.ack)
			if p.acked != tt.want {
				t.Fatalf("acked = %d, want %d", p.acked, tt.want)
			}
		})
	}
}

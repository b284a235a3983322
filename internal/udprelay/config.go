package udprelay

import (
	"errors"
	"fmt"
	"time"
)

// Config describes the relay's endpoints and the impairments it applies.
// Probabilities are in [0, 1]. The impairments apply to each direction
// independently.
type Config struct {
	// Target is the server's UDP address, such as "127.0.0.1:4433". It must
	// be a loopback address.
	Target string
	// Listen is the client-facing address. It must be a loopback address.
	// Empty means "127.0.0.1:0".
	Listen string

	// Delay is added to every datagram in each direction, so the round trip
	// grows by twice Delay.
	Delay time.Duration
	// Jitter adds a uniform random delay in [0, Jitter) to each datagram.
	// Datagrams may overtake each other as a result unless NoReorder is set.
	Jitter time.Duration
	// NoReorder keeps each direction in first-in first-out order despite
	// Jitter. It does not disable Reorder.
	NoReorder bool

	// Loss is the probability that a datagram is dropped.
	Loss float64
	// Duplicate is the probability that a datagram is sent twice.
	Duplicate float64
	// Reorder is the probability that a datagram is held back and sent
	// after the next datagram in its direction. If no datagram follows
	// within 10ms the held one is sent anyway.
	Reorder float64
	// HandshakeLoss replaces Loss for QUIC long-header datagrams (first byte
	// has bit 0x80 set: Initial, Handshake, 0-RTT, Retry). Zero means Loss
	// applies to them too; a negative value exempts them from loss.
	HandshakeLoss float64

	// Seed seeds the random choices. Zero means a time-based seed.
	Seed int64
	// MaxQueue bounds the datagrams waiting in each direction; datagrams
	// beyond it are dropped and counted in DirectionStats.QueueFull. Zero
	// means DefaultMaxQueue.
	MaxQueue int
}

// maxQueue returns the effective MaxQueue.
func (c *Config) maxQueue() int {
	if c.MaxQueue <= 0 {
		return DefaultMaxQueue
	}
	return c.MaxQueue
}

// validate reports the first impairment setting that is out of range.
func (c *Config) validate() error {
	for _, p := range []struct {
		name string
		v    float64
		min  float64
	}{
		{"Loss", c.Loss, 0},
		{"Duplicate", c.Duplicate, 0},
		{"Reorder", c.Reorder, 0},
		{"HandshakeLoss", c.HandshakeLoss, -1},
	} {
		if !(p.v >= p.min && p.v <= 1) { // also rejects NaN
			return fmt.Errorf("udprelay: %s %v out of range [%v, 1]", p.name, p.v, p.min)
		}
	}
	if c.Delay < 0 || c.Jitter < 0 {
		return errors.New("udprelay: negative Delay or Jitter")
	}
	if c.MaxQueue < 0 {
		return errors.New("udprelay: negative MaxQueue")
	}
	return nil
}

// clamp limits a probability to [lo, 1]; NaN becomes lo.
func clamp(v, lo float64) float64 {
	if !(v >= lo) {
		return lo
	}
	return min(v, 1)
}

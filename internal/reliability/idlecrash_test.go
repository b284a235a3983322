package reliability_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/qim-im/qim/client"
)

// idleDevice records when a device's connection ended and came back.
type idleDevice struct {
	mu           sync.Mutex
	disconnected time.Time // the last Disconnected; guarded by mu
	reconnected  time.Time // the first Connected after a Disconnected; guarded by mu
}

func (d *idleDevice) onState(s client.State) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch s {
	case client.Disconnected:
		d.disconnected = time.Now()
	case client.Connected:
		if !d.disconnected.IsZero() && d.reconnected.IsZero() {
			d.reconnected = time.Now()
		}
	}
}

func (d *idleDevice) times() (disconnected, reconnected time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.disconnected, d.reconnected
}

// TestIdleDevicesReconnectAfterKill9 connects idle devices (no traffic but
// keepalives every 500 ms, idle timeout 30 s) to a qimd process, kills it
// with SIGKILL and restarts it on the same port and data directory. Each
// device's next keepalive after the restart is a datagram large enough for
// the new process to answer with a stateless reset (quic-go answers
// nothing to packets of 42 bytes or less, and a PING packet is ~25), so
// every device reconnects within a few keepalive periods instead of
// waiting out its idle timeout. QIM_SOAK=1 runs 500 devices.
func TestIdleDevicesReconnectAfterKill9(t *testing.T) {
	const (
		keepAlive   = 500 * time.Millisecond
		idleTimeout = 30 * time.Second
	)
	devices := 20
	if soak() {
		devices = 500
	}
	p := newQimd(t, qimdBin.Path(t), t.TempDir(), freeUDPAddr(t))
	p.start()

	ds := make([]*idleDevice, devices)
	cs := make([]*client.Client, devices)
	var wg sync.WaitGroup
	for i := range ds {
		d := &idleDevice{}
		ds[i] = d
		user := fmt.Sprintf("idle%03d", i)
		cfg := p.config(user, p.token(user), "phone")
		cfg.QUICConfig = nil // the library's defaults, datagrams included
		cfg.KeepAlive, cfg.IdleTimeout = keepAlive, idleTimeout
		cfg.Reconnect = true
		cfg.OnState = d.onState
		cs[i] = dial(t, cfg)
		wg.Go(func() { drain(cs[i]) })
	}
	t.Cleanup(func() {
		for _, c := range cs {
			c.Close()
		}
		wg.Wait()
	})
	time.Sleep(2 * keepAlive) // idle: keepalives only

	p.kill()
	p.start() // on the same port and data directory
	restarted := time.Now()
	eventually(t, idleTimeout/2, func() string {
		n := 0
		for _, d := range ds {
			if _, r := d.times(); !r.IsZero() {
				n++
			}
		}
		return fmt.Sprintf("%d of %d idle devices to reconnect after the restart", devices-n, devices)
	}, func() bool {
		for _, d := range ds {
			if _, r := d.times(); r.IsZero() {
				return false
			}
		}
		return true
	})

	var notice, reconnect []time.Duration
	for _, d := range ds {
		disc, rec := d.times()
		notice = append(notice, max(0, disc.Sub(restarted)))
		reconnect = append(reconnect, rec.Sub(restarted))
	}
	slices.Sort(notice)
	slices.Sort(reconnect)
	t.Logf("%d idle devices, keepalive %v, idle timeout %v: after the restart, connection lost p50 %v max %v, reconnected p50 %v max %v",
		devices, keepAlive, idleTimeout, percentile(notice, 50).Round(time.Millisecond), notice[len(notice)-1].Round(time.Millisecond),
		percentile(reconnect, 50).Round(time.Millisecond), reconnect[len(reconnect)-1].Round(time.Millisecond))
	if limit := 6 * keepAlive; reconnect[len(reconnect)-1] > limit {
		t.Errorf("the last idle device reconnected %v after the restart, want within %v (its idle timeout is %v)",
			reconnect[len(reconnect)-1].Round(time.Millisecond), limit, idleTimeout)
	}
}

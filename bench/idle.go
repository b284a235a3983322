package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"
)

// IdleOptions shapes the idle scenario.
type IdleOptions struct {
	Devices int           // connected, authenticated, idle devices; 0 means 1,000
	Window  time.Duration // how long idle CPU is measured; 0 means 5s
}

// IdleResult is the server's cost of idle devices, from its metrics.
type IdleResult struct {
	Devices       int
	HeapPerDevice float64 // bytes of live Go heap per device
	RSSPerDevice  float64 // bytes of resident memory per device
	IdleCPU       float64 // server CPU seconds per second while they idle
}

// Idle connects Devices devices, lets them settle, and reads what they cost
// the server: the growth of its live heap (after a forced collection) and
// of its resident set, per device, and its CPU use while they are idle. It
// needs Env.Metrics.
func Idle(ctx context.Context, e *Env, o IdleOptions) (IdleResult, error) {
	o.Devices = cmp.Or(o.Devices, 1000)
	o.Window = cmp.Or(o.Window, 5*time.Second)
	if e.Metrics == "" {
		return IdleResult{}, errors.New("bench: the idle scenario reads the server's metrics: give its endpoint")
	}
	before, err := Scrape(ctx, e.Metrics, true)
	if err != nil {
		return IdleResult{}, err
	}
	e.progressf("idle: connecting %d devices", o.Devices)
	users := make([]string, o.Devices)
	for i := range users {
		users[i] = e.User("idle", i)
	}
	cs, err := dialAll(ctx, []*Env{e}, users, 64, nil)
	if err != nil {
		return IdleResult{}, err
	}
	defer closeAll(cs)
	sleepCtx(ctx, time.Second) // let handshakes' garbage and timers settle
	after, err := Scrape(ctx, e.Metrics, true)
	if err != nil {
		return IdleResult{}, err
	}
	e.progressf("idle: measuring idle CPU for %v", o.Window)
	sleepCtx(ctx, o.Window)
	end, err := Scrape(ctx, e.Metrics, false)
	if err != nil {
		return IdleResult{}, err
	}
	n := float64(o.Devices)
	res := IdleResult{
		Devices:       o.Devices,
		HeapPerDevice: (after.Heap() - before.Heap()) / n,
		RSSPerDevice:  (after.RSS() - before.RSS()) / n,
		IdleCPU:       (end.CPU() - after.CPU()) / end.At.Sub(after.At).Seconds(),
	}
	if res.HeapPerDevice <= 0 {
		return res, fmt.Errorf("bench: the server's heap did not grow with %d devices: is %s its metrics endpoint?", o.Devices, e.Metrics)
	}
	return res, ctx.Err()
}

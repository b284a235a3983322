package bench

import (
	"cmp"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/udprelay"
)

// MigrateOptions shapes the migrate scenario.
type MigrateOptions struct {
	// Locals are two local IP addresses of this machine from which the
	// server can be reached, each standing for one network of a phone
	// (Wi-Fi and cellular). nil means 127.0.0.2 and 127.0.0.3, which Linux
	// serves on loopback; other systems may need aliases (macOS: sudo
	// ifconfig lo0 alias 127.0.0.2 up).
	Locals []string
	// Switches is how many switches of each way are measured; 0 means 20.
	Switches int
}

// MigrateResult is what a migrate run measured: for each way of switching
// networks, the time from the switch to the delivery of the message that
// was waiting for the device.
type MigrateResult struct {
	Switches int
	// Prepared moves the live connection to a path PrepareMigration probed
	// while both networks worked: no round trip at the switch.
	Prepared SwitchTimes
	// Migrate moves the live connection without preparation: it probes the
	// new path first (one round trip).
	Migrate SwitchTimes
	// Reconnect dials a fresh connection, with a full handshake, and sends
	// CONNECT: what a client without migration does.
	Reconnect SwitchTimes
	// Resume does the same with a TLS session ticket: CONNECT in 0-RTT.
	Resume SwitchTimes
	// Resumed0RTT counts the resumes that the server accepted in 0-RTT.
	Resumed0RTT int
}

// SwitchTimes are the median and 90th percentile of one way's switches.
type SwitchTimes struct {
	P50, P90 time.Duration
}

// Ratio is how many times sooner a migration without preparation delivers
// than a reconnection, by their medians.
func (r MigrateResult) Ratio() float64 { return ratio(r.Reconnect.P50, r.Migrate.P50) }

// PreparedRatio is Ratio for a prepared migration.
func (r MigrateResult) PreparedRatio() float64 { return ratio(r.Reconnect.P50, r.Prepared.P50) }

func ratio(a, b time.Duration) float64 {
	if b <= 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// The ways of switching, in the order each round runs them: a way that
// dials leaves a new connection, with no previous path for the next
// migration to wait for (see client.Client.Migrate).
const (
	wayReconnect = iota
	wayMigrate
	wayResume
	wayPrepared
	ways
)

// Migrate runs the migrate scenario. Alice sends; bob, the device under
// test, has two networks, one local address each. Every switch goes like
// this: bob's current network goes down (his sockets on it stop carrying
// anything: see udprelay.Links); alice sends him a message, which the
// server stores and pushes into the dead network; then bob switches to his
// other network, one way or another, and the clock runs until he has the
// message. Every way must reach the server over the new network, and none
// pays for storing the message. The ways take turns, Switches times each.
func Migrate(ctx context.Context, e *Env, o MigrateOptions) (MigrateResult, error) {
	o.Switches = cmp.Or(o.Switches, 20)
	locals := o.Locals
	if locals == nil {
		locals = []string{"127.0.0.2", "127.0.0.3"}
	}
	networks, err := bindable(locals)
	if err != nil {
		return MigrateResult{}, err
	}
	e.progressf("migrate: %d switches of each way between %v and %v", o.Switches, networks[0], networks[1])

	var links udprelay.Links
	tickets := tls.NewLRUClientSessionCache(4)
	bobCfg := e.ClientConfig(e.User("migrate-bob", 0))
	bobCfg.ListenPacket, bobCfg.SessionCache = links.ListenPacket, tickets
	dialBob := func(network netip.Addr, tickets tls.ClientSessionCache) (*client.Client, error) {
		cfg := bobCfg
		cfg.LocalAddr, cfg.SessionCache = network.String(), tickets
		c, err := dialRetry(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("bench: migrate: bob cannot reach the server from %v: %w", network, err)
		}
		return c, nil
	}
	aliceCfg := e.ClientConfig(e.User("migrate-alice", 0))
	aliceCfg.SendOnly = true
	alice, err := dialRetry(ctx, aliceCfg)
	if err != nil {
		return MigrateResult{}, fmt.Errorf("bench: migrate: connect alice: %w", err)
	}
	defer alice.Close()
	bob, err := dialBob(networks[1], tickets)
	if err != nil {
		return MigrateResult{}, err
	}
	// A first connection from each network, so that both answer and the
	// ticket cache holds a ticket.
	bob.Close()
	if bob, err = dialBob(networks[0], tickets); err != nil {
		return MigrateResult{}, err
	}
	defer func() { bob.Close() }()

	res := MigrateResult{Switches: o.Switches}
	var times [ways][]time.Duration
	cur, seq := 0, 0
	for round := range o.Switches {
		for way := range ways {
			from, to := networks[cur], networks[1-cur]
			seq++
			text := fmt.Sprintf("migrate %d", seq)
			if way == wayPrepared {
				if err := bob.PrepareMigration(ctx, to.String()); err != nil {
					return res, fmt.Errorf("bench: migrate: prepare the move to %v: %w", to, err)
				}
			}
			links.SetDown(from, true)
			if _, err := alice.Send(ctx, client.ToUser(bob.User()), client.Outgoing{Text: text}); err != nil {
				links.SetDown(from, false)
				return res, fmt.Errorf("bench: migrate: send: %w", err)
			}
			sleepCtx(ctx, 20*time.Millisecond) // the same quiet moment before every switch

			start := time.Now()
			old := bob
			switch way {
			case wayPrepared, wayMigrate:
				err = bob.Migrate(ctx, to.String())
			case wayReconnect:
				bob, err = dialBob(to, tls.NewLRUClientSessionCache(1)) // no ticket: a full handshake
			case wayResume:
				bob, err = dialBob(to, tickets)
			}
			if err == nil {
				err = awaitText(ctx, bob, text)
			}
			took := time.Since(start)
			links.SetDown(from, false)
			if bob == nil {
				bob = old
			} else if bob != old {
				old.Close() // the server has replaced its connection
			}
			if err != nil {
				return res, fmt.Errorf("bench: migrate: switch %d to %v: %w", seq, to, err)
			}
			if way == wayResume && bob.Used0RTT() {
				res.Resumed0RTT++
			}
			times[way] = append(times[way], took)
			cur = 1 - cur
		}
		if (round+1)%5 == 0 {
			e.progressf("  %d/%d rounds", round+1, o.Switches)
		}
	}
	res.Prepared = switchTimes(times[wayPrepared])
	res.Migrate = switchTimes(times[wayMigrate])
	res.Reconnect = switchTimes(times[wayReconnect])
	res.Resume = switchTimes(times[wayResume])
	return res, nil
}

// bindable parses two local IP addresses and checks that UDP sockets can
// be bound to them.
func bindable(locals []string) ([2]netip.Addr, error) {
	var networks [2]netip.Addr
	if len(locals) != 2 {
		return networks, fmt.Errorf("bench: migrate: %d local addresses given, want 2", len(locals))
	}
	for i, s := range locals {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return networks, fmt.Errorf("bench: migrate: local address %q: want an IP address", s)
		}
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
		if err != nil {
			return networks, fmt.Errorf("bench: migrate: cannot bind %v (give two local addresses that reach the server; on macOS add loopback aliases: sudo ifconfig lo0 alias %v up): %w", ip, ip, err)
		}
		c.Close()
		networks[i] = ip
	}
	if networks[0] == networks[1] {
		return networks, fmt.Errorf("bench: migrate: the two local addresses are both %v", networks[0])
	}
	return networks, nil
}

// awaitText waits until c receives a message with text, skipping others.
func awaitText(ctx context.Context, c *client.Client, text string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		select {
		case m, ok := <-c.Messages():
			if !ok {
				return fmt.Errorf("session ended: %w", c.Err())
			}
			if client.Text(m) == text {
				return nil
			}
		case <-ctx.Done():
			return fmt.Errorf("the message waiting did not arrive: %w", ctx.Err())
		}
	}
}

// switchTimes sorts d and reads its median and 90th percentile.
func switchTimes(d []time.Duration) SwitchTimes {
	if len(d) == 0 {
		return SwitchTimes{}
	}
	slices.Sort(d)
	return SwitchTimes{P50: d[len(d)/2], P90: d[min(len(d)-1, len(d)*9/10)]}
}

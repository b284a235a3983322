package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	qimpb "github.com/qim-im/qim/proto"
)

// This file holds how a Client picks among the nodes of a cluster
// (Config.Addr and Config.Addrs): Dial tries them in order, and a client
// that reconnects keeps to its node until that node goes away or an attempt
// to reach it fails, then moves to the next, round-robin.

// ServerAddr returns the address, as given in Config.Addr or Config.Addrs,
// of the node that accepted the client's last connection. While the client
// reconnects, it is still the node of the connection that was lost.
func (c *Client) ServerAddr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.addrs[c.served]
}

// nodeAddrs returns the nodes of Config, addr first, after checking that
// each is a host:port.
func nodeAddrs(addr string, others []string) ([]string, error) {
	addrs := append([]string{addr}, others...)
	for _, a := range addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("qim: dial %s: %w", a, err)
		}
	}
	return addrs, nil
}

// dialFirst connects to the first node, in the order of c.addrs, that
// accepts the session. Each attempt is bounded by ctx and connectTimeout.
// A refusal that every node would repeat (isTerminal) ends it at once;
// after any other failure it tries the next node. It is called by Dial.
func (c *Client) dialFirst(ctx context.Context) (*link, error) {
	var failed []error
	for node, addr := range c.addrs {
		actx, cancel := context.WithTimeout(ctx, connectTimeout)
		l, err := c.dialLink(actx, node, false)
		cancel()
		switch {
		case err == nil:
			return l, nil
		case len(c.addrs) == 1 || isTerminal(err) || ctx.Err() != nil:
			return nil, err
		}
		c.log.Debug("server failed; trying the next", "server", addr, "err", err)
		failed = append(failed, err)
	}
	return nil, &dialError{addrs: c.addrs, errs: failed}
}

// nextNode makes the next attempt to connect go to the node after the
// current one, round-robin. It is called by supervise.
func (c *Client) nextNode() {
	if len(c.addrs) == 1 {
		return
	}
	c.mu.Lock()
	c.node = (c.node + 1) % len(c.addrs)
	next := c.addrs[c.node]
	c.mu.Unlock()
	c.log.Debug("next attempt goes to another server", "server", next)
}

// failedOver reports that the client connected to the node at to after
// losing its connection to the node at from. It is called by supervise.
func (c *Client) failedOver(from, to string) {
	c.log.Info("failed over to another server", "from", from, "to", to)
	if c.cfg.OnFailover != nil {
		c.cfg.OnFailover(from, to)
	}
}

// isGoingAway reports whether the server ended the connection because it
// is shutting down.
func isGoingAway(err error) bool {
	var qe *Error
	return errors.As(err, &qe) && qe.Code == qimpb.Code_GOING_AWAY
}

// resolve looks up the UDP address of addr (host:port) within ctx,
// preferring an IPv4 address as net.ResolveUDPAddr does. Each attempt to
// connect resolves its node again, so that a node whose name moved is
// reached at its new address.
func resolve(ctx context.Context, addr string) (*net.UDPAddr, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	p, err := net.DefaultResolver.LookupPort(ctx, "udp", port)
	if err != nil {
		return nil, err
	}
	if host == "" {
		return &net.UDPAddr{Port: p}, nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("lookup %s: no address", host)
	}
	ip := ips[0].Unmap()
	for _, a := range ips {
		if a.Unmap().Is4() {
			ip = a.Unmap()
			break
		}
	}
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(p))), nil
}

// dialError is Dial's error when no node accepted the session: each
// attempt's error, in the order of the nodes. errors.As and errors.Is see
// each of them.
type dialError struct {
	addrs []string
	errs  []error
}

func (e *dialError) Error() string {
	var b strings.Builder
	b.WriteString("qim: no server accepted the session")
	for i, err := range e.errs {
		msg := strings.TrimPrefix(err.Error(), "qim: ")
		msg = strings.TrimPrefix(msg, "dial "+e.addrs[i]+": ")
		fmt.Fprintf(&b, "; %s: %s", e.addrs[i], msg)
	}
	return b.String()
}

func (e *dialError) Unwrap() []error { return e.errs }

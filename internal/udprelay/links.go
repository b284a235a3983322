package udprelay

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
)

// Links emulates a device's network links on one machine, where each local
// IP address stands for one network (127.0.0.2 for Wi-Fi, 127.0.0.3 for
// cellular, say). While the link of an address is down, the sockets opened
// on it with ListenPacket carry nothing either way, as when the device
// loses that network: what they write is dropped, and what arrives for
// them is discarded unread. A Relay's Blackhole cuts every flow at once;
// Links cut one network of the device and leave the others up.
//
// The zero value has every link up. Its methods are safe for concurrent
// use.
type Links struct {
	mu   sync.RWMutex
	down map[netip.Addr]bool
}

// ListenPacket opens a UDP socket on addr ("host:port"), whose traffic
// stops while the link of its IP address is down. It has the signature of
// client.Config.ListenPacket. The socket must be bound to a specific IP
// address: an unspecified one belongs to no link.
func (l *Links) ListenPacket(network, addr string) (net.PacketConn, error) {
	ua, err := net.ResolveUDPAddr(network, addr)
	if err != nil {
		return nil, fmt.Errorf("udprelay: links: %w", err)
	}
	ip, ok := netip.AddrFromSlice(ua.IP)
	if !ok || ip.Unmap().IsUnspecified() {
		return nil, fmt.Errorf("udprelay: links: %q is not a specific IP address", addr)
	}
	conn, err := net.ListenUDP(network, ua)
	if err != nil {
		return nil, fmt.Errorf("udprelay: links: %w", err)
	}
	return &linkConn{PacketConn: conn, links: l, ip: ip.Unmap()}, nil
}

// SetDown takes the link of ip down (true) or brings it back up (false).
// It applies to the sockets open on ip and to those opened later.
func (l *Links) SetDown(ip netip.Addr, down bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down == nil {
		l.down = make(map[netip.Addr]bool)
	}
	l.down[ip.Unmap()] = down
}

// isDown reports whether the link of ip is down.
func (l *Links) isDown(ip netip.Addr) bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.down[ip]
}

// linkConn is a socket of Links: a UDP socket that carries nothing while
// the link of its IP address is down. It offers only the methods of
// net.PacketConn, so that quic-go cannot read or write around them
// (through ReadMsgUDP, say).
type linkConn struct {
	net.PacketConn
	links *Links
	ip    netip.Addr // static: the socket's IP address
}

// ReadFrom implements net.PacketConn, discarding what arrives while the
// link is down.
func (c *linkConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(b)
		if err != nil || !c.links.isDown(c.ip) {
			return n, addr, err
		}
	}
}

// WriteTo implements net.PacketConn, dropping what is written while the
// link is down as a network would: silently.
func (c *linkConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if c.links.isDown(c.ip) {
		return len(b), nil
	}
	return c.PacketConn.WriteTo(b, addr)
}

package client

import (
	"net"
	"time"

	"github.com/quic-go/quic-go"
)

// ConnOf returns the QUIC connection c currently uses, or nil.
func ConnOf(c *Client) *quic.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == nil {
		return nil
	}
	return c.cur.conn
}

// SocketsOf returns how many UDP sockets and quic.Transports the current
// connection of c holds, and the local address of its active path.
func SocketsOf(c *Client) (sockets, transports int, local net.Addr) {
	c.mu.Lock()
	l := c.cur
	c.mu.Unlock()
	if l == nil {
		return 0, 0, nil
	}
	ps := l.paths
	sockets = ps.openSockets()
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return sockets, len(ps.trs), ps.active.sock.LocalAddr()
}

// AgePreparedPath makes the path prepared on c's connection look as if it
// last answered a probe d earlier.
func AgePreparedPath(c *Client, d time.Duration) {
	c.mu.Lock()
	l := c.cur
	c.mu.Unlock()
	ps := l.paths
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.readyAt = ps.readyAt.Add(-d)
}

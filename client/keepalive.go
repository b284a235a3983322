package client

import (
	"time"
)

// keepAliveSize is the payload size of a keepalive datagram. With QUIC's
// headers and tag the packet is about 90 bytes: above the 42 bytes under
// which quic-go's server answers nothing for a connection it does not know
// (no stateless reset), which is what a restarted server sees from a
// device that was connected before. A PING packet is ~25 bytes.
const keepAliveSize = 64

// keepAlive sends a keepalive datagram every keepalive period until the
// connection ends, when both sides enable QUIC datagrams (docs/PROTOCOL.md
// section 9). quic-go's own keepalive PING, with the same period, then
// never fires on an idle connection that the server answers: the
// datagram's acknowledgement counts as activity. It runs in its own
// goroutine; SendDatagram may block when quic-go's queue is full, which
// holds nothing else up, and returns when the connection ends.
func (l *link) keepAlive() {
	defer l.wg.Done()
	period := l.c.quicConf.KeepAlivePeriod
	if idle := l.c.quicConf.MaxIdleTimeout; idle > 0 && period > idle/2 {
		period = idle / 2
	}
	if period <= 0 || !l.c.quicConf.EnableDatagrams {
		return
	}
	// In 0-RTT, the server's parameters are those of the session ticket
	// until the handshake completes.
	select {
	case <-l.conn.Context().Done():
		return
	case <-l.conn.HandshakeComplete():
	}
	t := time.NewTicker(period)
	defer t.Stop()
	payload := make([]byte, keepAliveSize)
	for {
		select {
		case <-l.conn.Context().Done():
			return
		case <-t.C:
			// An error other than the connection's end means that the
			// server does not take datagrams: quic-go's PINGs remain.
			if err := l.conn.SendDatagram(payload); err != nil {
				l.log.Debug("no keepalive datagrams", "err", err)
				return
			}
		}
	}
}

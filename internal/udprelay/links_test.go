package udprelay

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestLinksCutOneNetwork(t *testing.T) {
	srv := startServer(t, true)
	var links Links
	open := func(ip string) net.PacketConn {
		t.Helper()
		c, err := links.ListenPacket("udp4", ip+":0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	wifi, cell := open("127.0.0.2"), open("127.0.0.3")
	to := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(srv.addr()))
	echo := func(c net.PacketConn, msg string) bool {
		t.Helper()
		if _, err := c.WriteTo([]byte(msg), to); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		buf := make([]byte, 64)
		n, _, err := c.ReadFrom(buf)
		return err == nil && string(buf[:n]) == msg
	}
	if !echo(wifi, "wifi up") || !echo(cell, "cell up") {
		t.Fatal("no echo with both links up")
	}

	links.SetDown(netip.MustParseAddr("127.0.0.2"), true)
	before := srv.count()
	if echo(wifi, "wifi down") {
		t.Fatal("echo on a link that is down")
	}
	if !echo(cell, "cell") {
		t.Fatal("no echo on the link that stayed up")
	}
	if n := srv.count(); n != before+1 {
		t.Fatalf("server received %d datagrams while wifi was down, want only cellular's", n-before)
	}
	// What the server sends to the socket while the link is down is lost,
	// even if it is read after the link comes back.
	if _, err := srv.conn.WriteToUDP([]byte("lost"), wifi.LocalAddr().(*net.UDPAddr)); err != nil {
		t.Fatal(err)
	}
	wifi.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, _, err := wifi.ReadFrom(make([]byte, 64)); err == nil {
		t.Fatal("read a datagram while the link was down")
	}

	links.SetDown(netip.MustParseAddr("127.0.0.2"), false)
	if !echo(wifi, "wifi back") {
		t.Fatal("no echo after the link came back")
	}
	if _, err := links.ListenPacket("udp4", ":0"); err == nil {
		t.Fatal("a socket on no particular address was opened")
	}
}

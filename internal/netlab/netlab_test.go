package netlab

import (
	"strings"
	"testing"
	"time"
)

// TestLab checks the lab itself: UDP from the phone reaches the server over
// wifi, and over cellular once wifi is down.
func TestLab(t *testing.T) {
	l := New(t)
	srv, err := l.ListenUDP(l.Server, ServerIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			srv.WriteTo([]byte(from.String()+" "+string(buf[:n])), from)
		}
	}()
	ping := func(local string) string {
		t.Helper()
		c, err := l.ListenUDP(l.Phone, local+":0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, 1500)
		for range 20 {
			c.WriteTo([]byte("ping"), srv.LocalAddr())
			c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if n, _, err := c.ReadFrom(buf); err == nil {
				return string(buf[:n])
			}
		}
		t.Fatalf("no answer from %s", local)
		return ""
	}
	if got := ping(PhoneWifiIP); !contains(got, PhoneWifiIP) {
		t.Fatalf("over wifi: %q", got)
	}
	l.SetLink(l.WifiLink, false)
	if got := ping(PhoneCellIP); !contains(got, PhoneCellIP) {
		t.Fatalf("over cellular: %q", got)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

package session

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/qim-im/qim/core"
	qimpb "github.com/qim-im/qim/proto"
)

// fakeConn is a device connection whose handshake the test completes.
type fakeConn struct {
	handshake chan struct{}

	mu           sync.Mutex
	disconnected []qimpb.Code
}

func (c *fakeConn) OpenStream(context.Context) (Stream, error) {
	return nil, context.Canceled
}

func (c *fakeConn) Disconnect(code qimpb.Code, _ string) {
	c.mu.Lock()
	c.disconnected = append(c.disconnected, code)
	c.mu.Unlock()
}

func (c *fakeConn) HandshakeComplete() <-chan struct{} { return c.handshake }

func (c *fakeConn) codes() []qimpb.Code {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]qimpb.Code(nil), c.disconnected...)
}

// TestReplaceOnlyOlder opens a device's session whose handshake is still
// completing, then a newer one of the same device, then lets the first
// handshake complete: the newer session must stay (it once got REPLACED by
// the older one's late announcement: client.TestReplaced failed so).
func TestReplaceOnlyOlder(t *testing.T) {
	d := newDevices(t, Config{}, core.Config{})
	connect := &qimpb.Connect{User: "alice", Device: "phone", SendOnly: true}

	older := &fakeConn{handshake: make(chan struct{})}
	s1, err := d.Open(t.Context(), "app", connect, older, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Close()
	done := make(chan struct{})
	close(done)
	newer := &fakeConn{handshake: done}
	s2, err := d.Open(t.Context(), "app", connect, newer, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	// The newer session's announcement closes the older one.
	waitFor(t, func() bool { return len(older.codes()) == 1 })
	if got := older.codes(); got[0] != qimpb.Code_REPLACED {
		t.Fatalf("older session closed with %v", got)
	}
	// The older one's, late, must not close the newer one.
	close(older.handshake)
	s1.wg.Wait() // its announcement has been delivered
	if got := newer.codes(); len(got) != 0 {
		t.Fatalf("newer session closed with %v by the older one's handshake", got)
	}
}

// TestReplaceMissedAnnouncement opens a device's session, then has a newer
// connection of the same device take its epoch without its announcement
// ever reaching this session (it came before this session registered, or
// another node's was lost): once its handshake completes, the session
// finds the newer epoch in the store and closes with REPLACED.
func TestReplaceMissedAnnouncement(t *testing.T) {
	d := newDevices(t, Config{}, core.Config{})
	connect := &qimpb.Connect{User: "alice", Device: "phone", SendOnly: true}
	older := &fakeConn{handshake: make(chan struct{})}
	s1, err := d.Open(t.Context(), "app", connect, older, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Close()
	// The newer connection, elsewhere: its epoch only.
	if _, err := d.Hub().Store().NextEpoch(t.Context(), "app", "alice", "phone"); err != nil {
		t.Fatal(err)
	}
	close(older.handshake)
	waitFor(t, func() bool { return len(older.codes()) == 1 })
	if got := older.codes(); got[0] != qimpb.Code_REPLACED {
		t.Fatalf("older session closed with %v", got)
	}
	// The newest session is not replaced by its own check.
	done := make(chan struct{})
	close(done)
	newest := &fakeConn{handshake: done}
	s3, err := d.Open(t.Context(), "app", connect, newest, nil)
	if err != nil {
		t.Fatal(err)
	}
	s3.wg.Wait()
	defer s3.Close()
	if got := newest.codes(); len(got) != 0 {
		t.Fatalf("the newest session closed with %v", got)
	}
}

func (c *fakeConn) WriteEvent([]byte) error     { return nil }
func (c *fakeConn) Datagrams() bool             { return false }
func (c *fakeConn) SendDatagram(b []byte) error { return errors.New("no datagrams") }

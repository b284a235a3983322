package cluster

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/core"
	qimpb "github.com/qim-im/qim/proto"
)

// sameEvent reports whether a and b carry the same values (Frame aside).
func sameEvent(a, b core.Event) bool {
	return proto.Equal(a.Msg, b.Msg) && a.Read.Equal(b.Read) && a.Conv == b.Conv && a.Revoke == b.Revoke &&
		a.ReplaceDevice == b.ReplaceDevice && a.ReplaceEpoch == b.ReplaceEpoch && a.Group == b.Group
}

var sampleEvents = []core.Event{
	{Msg: &qimpb.Message{Id: 7, Seq: 3, Timestamp: 1700000000123, FromUser: "alice", FromDevice: "phone", ToGroup: "g1",
		Type: qimpb.MessageType_IMAGE, Payload: []byte("https://example.com/a.png"), ClientMsgId: "c\x00d"},
		Conv: "g:g1", Read: time.Unix(0, 1700000000100000001)},
	{Revoke: "g:g1"},
	{ReplaceDevice: "phone", ReplaceEpoch: 42},
	{Group: "g.1@x"},
	{},
}

// TestEventRoundTrip: an event arrives with every field intact but Frame.
func TestEventRoundTrip(t *testing.T) {
	for _, ev := range sampleEvents {
		ev.Frame = new(core.PushFrame)
		b, err := encodeEvent("org/app", "node-1", ev, nil)
		if err != nil {
			t.Fatal(err)
		}
		app, node, got, err := decodeEvent(b)
		if err != nil || app != "org/app" || node != "node-1" || got.Frame != nil || !sameEvent(got, ev) {
			t.Errorf("%+v arrived as %+v in %q from %q (%v)", ev, got, app, node, err)
		}
		if !got.Read.IsZero() && got.Read.UnixNano() != ev.Read.UnixNano() {
			t.Errorf("Read %v arrived as %v", ev.Read, got.Read)
		}
	}
}

// FuzzDecode: the decoders of what arrives from NATS return an error or a
// value that encodes back to the same value, and never panic.
func FuzzDecode(f *testing.F) {
	for _, ev := range sampleEvents {
		b, _ := encodeEvent("org/app", "node-1", ev, nil)
		f.Add(b)
	}
	for _, enc := range []func() ([]byte, error){
		func() ([]byte, error) { return encodeMissed("node-1", 12) },
		func() ([]byte, error) { return encodeNode("node-1", true, false) },
		func() ([]byte, error) { return encodeSync("node-1", 99) },
	} {
		b, _ := enc()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if app, node, ev, err := decodeEvent(b); err == nil {
			again, err := encodeEvent(app, node, ev, nil)
			if err != nil {
				t.Fatal(err)
			}
			app2, node2, ev2, err := decodeEvent(again)
			if err != nil || app2 != app || node2 != node || !sameEvent(ev, ev2) {
				t.Fatalf("%+v re-encoded as %+v (%v)", ev, ev2, err)
			}
		}
		_, _, _ = decodeMissed(b)
		_, _ = decodeNode(b)
		_, _, _ = decodeSync(b)
	})
}

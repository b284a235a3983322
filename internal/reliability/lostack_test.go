package reliability_test

import (
	"testing"

	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
)

// TestLostAck sends a message, loses its acknowledgement, and sends the same
// ClientMsgID again on a new connection: the answer carries the original id,
// seq and timestamp with Duplicate set, and the receiver gets the message
// once.
func TestLostAck(t *testing.T) {
	for _, tt := range []struct {
		name string
		// first sends m as alice and returns its ack, or nil when the ack
		// never reached alice.
		first func(t *testing.T, srv *testserver.Server, m client.Outgoing) *qimpb.MessageAck
		// stored: the first send is certainly stored.
		stored bool
	}{
		{"ack read then dropped", func(t *testing.T, srv *testserver.Server, m client.Outgoing) *qimpb.MessageAck {
			c := dial(t, demoConfig(srv, "alice", "phone"))
			ack, err := c.Send(ctxT(t), client.ToUser("bob"), m)
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
			return ack
		}, true},
		{"server restarted before the retry", func(t *testing.T, srv *testserver.Server, m client.Outgoing) *qimpb.MessageAck {
			c := dial(t, demoConfig(srv, "alice", "phone"))
			ack, err := c.Send(ctxT(t), client.ToUser("bob"), m)
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
			srv.Restart()
			return ack
		}, true},
		{"connection dropped before the ack", func(t *testing.T, srv *testserver.Server, m client.Outgoing) *qimpb.MessageAck {
			// A raw device writes the request and closes its connection
			// at once, without reading: the message may or may not be
			// stored, and alice cannot know.
			d := dialRawDevice(t, srv.Addr, srv.ClientTLS(), "alice", srv.Token("alice"), "phone")
			str, err := d.qc.OpenStreamSync(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			txt, _ := proto.Marshal(&qimpb.MessageTxt{Txt: m.Text})
			payload, _ := proto.Marshal(&qimpb.Message{ToUser: "bob", Payload: txt, ClientMsgId: m.ClientMsgID})
			writeFrame(t, str, qimpb.CommandType_REQUEST, &qimpb.Request{Type: qimpb.RequestType_MESSAGE, RequestId: 1, Payload: payload})
			d.qc.CloseWithError(quic.ApplicationErrorCode(qimpb.Code_CLOSED), "gone")
			return nil
		}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := testserver.Start(t, testserver.Options{})
			m := client.Outgoing{Text: "once only", ClientMsgID: "lost-ack-1"}
			first := tt.first(t, srv, m)

			retry := dial(t, demoConfig(srv, "alice", "phone"))
			again, err := retry.Send(ctxT(t), client.ToUser("bob"), m)
			if err != nil {
				t.Fatalf("retry: %v", err)
			}
			t.Logf("first ack %v; retry ack %v", first, again)
			if first != nil {
				if !again.GetDuplicate() || again.GetId() != first.GetId() || again.GetSeq() != first.GetSeq() ||
					again.GetTimestamp() != first.GetTimestamp() {
					t.Fatalf("retry answered %v, want the original %v with duplicate", again, first)
				}
			}
			if tt.stored && !again.GetDuplicate() {
				t.Fatal("retry of a stored message not marked duplicate")
			}
			if again.GetSeq() != 1 {
				t.Fatalf("retry has seq %d, want 1", again.GetSeq())
			}

			// A third try, as a phone that lost this ack too.
			third, err := retry.Send(ctxT(t), client.ToUser("bob"), m)
			if err != nil || !third.GetDuplicate() || third.GetId() != again.GetId() || third.GetSeq() != again.GetSeq() {
				t.Fatalf("third try: %v, %v; want a duplicate of %v", third, err, again)
			}

			bob := dial(t, demoConfig(srv, "bob", "phone"))
			got := recv(t, bob, 1, waitTime)[0]
			if got.GetId() != again.GetId() || got.GetSeq() != 1 || client.Text(got) != m.Text || got.GetClientMsgId() != m.ClientMsgID {
				t.Fatalf("bob got %v", got)
			}
			quiet(t, bob)

			// A fresh raw device of bob sees it once at the wire as well.
			d := dialRawDevice(t, srv.Addr, srv.ClientTLS(), "bob", srv.Token("bob"), "raw")
			conv := convKey(got)
			d.waitFor(t, map[string]int{conv: 1}, waitTime)
			checkConv(t, "bob/raw", conv, d.messages(conv), map[string]sentMsg{m.ClientMsgID: {conv: conv, id: again.GetId(), seq: again.GetSeq()}})
		})
	}
}

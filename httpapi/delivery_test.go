package httpapi_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
)

// TestHTTPToQUIC sends messages over HTTP, with retries of the same
// client_msg_id (one after the other, concurrent, through the backend as
// the same sender), while QUIC devices of both users are connected: each
// device receives each message exactly once and in order, and the history
// holds each once.
func TestHTTPToQUIC(t *testing.T) {
	eachTransport(t, testserver.Options{}, func(t *testing.T, a *api) {
		devices := []*client.Client{a.dial("bob", "phone"), a.dial("bob", "tablet"), a.dial("alice", "phone")}
		web := a.device("alice", "web")
		send := func(c cred, text, id string) *qimpb.MessageAck {
			t.Helper()
			return a.send(c, fmt.Sprintf(`{"to_user":"bob","text":%q,"client_msg_id":%q}`, text, id))
		}
		same := func(what string, got, want *qimpb.MessageAck) {
			t.Helper()
			if !got.Duplicate || got.Id != want.Id || got.Seq != want.Seq || got.Timestamp != want.Timestamp {
				t.Fatalf("%s: %v, want a duplicate of %v", what, got, want)
			}
		}
		ack1 := send(web, "m1", "c1")
		ack2 := send(web, "m2", "c2")
		if ack1.Duplicate || ack2.Duplicate || ack1.Seq != 1 || ack2.Seq != 2 {
			t.Fatalf("acks %v %v", ack1, ack2)
		}
		same("retry", send(web, "m2", "c2"), ack2)
		same("retry from another device", send(a.device("alice", "laptop"), "m2", "c2"), ack2)
		same("retry by the backend as alice", send(a.key("alice"), "m2", "c2"), ack2)

		// Concurrent retries of a send whose first answer was lost.
		const n = 8
		acks := make([]*qimpb.MessageAck, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { acks[i], errs[i] = a.trySend(web, `{"to_user":"bob","text":"m3","client_msg_id":"c3"}`) })
		}
		wg.Wait()
		first := 0
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("concurrent send %d: %v", i, errs[i])
			}
			if !acks[i].Duplicate {
				first++
			}
			if acks[i].Seq != 3 || acks[i].Id != acks[0].Id {
				t.Fatalf("concurrent send %d: %v, send 0: %v", i, acks[i], acks[0])
			}
		}
		if first != 1 {
			t.Fatalf("%d of %d concurrent sends of one client_msg_id were not duplicates, want 1", first, n)
		}
		same("a late retry", send(web, "m1", "c1"), ack1)
		send(web, "m4", "c4")

		for _, dev := range devices {
			for i, m := range expectTexts(t, dev, "m1", "m2", "m3", "m4") {
				if m.Seq != uint64(i+1) || m.FromUser != "alice" || m.FromDevice != "web" {
					t.Fatalf("%s/%s received %v", dev.User(), dev.Device(), m)
				}
			}
		}
		var texts []string
		for _, m := range a.history(a.user("bob"), "u:alice:bob", "") {
			texts = append(texts, m.Text)
		}
		if fmt.Sprint(texts) != "[m1 m2 m3 m4]" {
			t.Fatalf("history %v", texts)
		}

		// The same in a group.
		team := a.createGroup("alice", "team")
		a.join("bob", team)
		// A client_msg_id is the sender's, in every conversation
		// (docs/PROTOCOL.md).
		a.fail("POST", "/v1/messages", web, `{"to_group":"`+team+`","text":"g1","client_msg_id":"c1"}`, http.StatusBadRequest, qimpb.Code_INVALID_ARGUMENT)
		gack := a.send(web, `{"to_group":"`+team+`","text":"g1","client_msg_id":"g-1"}`)
		same("group retry", a.send(web, `{"to_group":"`+team+`","text":"g1","client_msg_id":"g-1"}`), gack)
		a.send(web, `{"to_group":"`+team+`","text":"g2"}`)
		for _, dev := range devices {
			expectTexts(t, dev, "g1", "g2")
		}
	})
}

// trySend sends a message as c, for a goroutine of its own: it returns an
// error instead of failing the test.
func (a *api) trySend(c cred, body string) (*qimpb.MessageAck, error) {
	req := a.request("POST", "/v1/messages", c, []byte(body))
	resp, err := a.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK || resp.Proto != a.proto {
		return nil, fmt.Errorf("%d over %s: %s", resp.StatusCode, resp.Proto, b)
	}
	var ack qimpb.MessageAck
	if err := protojson.Unmarshal(bytes.TrimSpace(b), &ack); err != nil {
		return nil, err
	}
	return &ack, nil
}

// TestQUICToHTTP sends messages from a QUIC device and reads them over
// HTTP, where a send with the device's client_msg_id is a duplicate of the
// device's, and answers over HTTP to the device.
func TestQUICToHTTP(t *testing.T) {
	eachTransport(t, testserver.Options{}, func(t *testing.T, a *api) {
		alice, bob := a.dial("alice", "phone"), a.dial("bob", "phone")
		ack1, err := alice.Send(ctx(t), client.ToUser("bob"), client.Outgoing{Text: "q1", ClientMsgID: "q-1"})
		if err != nil {
			t.Fatal(err)
		}
		if again, err := alice.Send(ctx(t), client.ToUser("bob"), client.Outgoing{Text: "q1", ClientMsgID: "q-1"}); err != nil || !again.Duplicate || again.Seq != ack1.Seq {
			t.Fatalf("device's retry: %v, %v", again, err)
		}
		// The same message sent again over HTTP, as when a client moves
		// its outbox from one protocol to the other.
		if got := a.send(a.device("alice", "phone"), `{"to_user":"bob","text":"q1","client_msg_id":"q-1"}`); !got.Duplicate || got.Id != ack1.Id || got.Seq != ack1.Seq {
			t.Fatalf("HTTP retry of the device's message: %v, device's ack %v", got, ack1)
		}
		if _, err := alice.Send(ctx(t), client.ToUser("bob"), client.Outgoing{Text: "q2"}); err != nil {
			t.Fatal(err)
		}
		expectTexts(t, bob, "q1", "q2")

		page := a.history(a.user("bob"), "u:alice:bob", "")
		if len(page) != 2 || page[0].Text != "q1" || page[1].Text != "q2" || page[0].FromDevice != "phone" || page[0].ClientMsgId != "q-1" || page[0].Id != ack1.Id {
			t.Fatalf("history read over HTTP: %v", page)
		}
		eventually(t, "bob's phone acknowledged both", func() bool {
			c := a.inbox(a.device("bob", "phone"))["u:alice:bob"]
			return c.GetAcked() == 2
		})
		// Received is not read: the unread count waits for a read.
		if c := a.inbox(a.device("bob", "phone"))["u:alice:bob"]; c.Unread != 2 || c.ReadSeq != 0 {
			t.Fatalf("bob's inbox after the acknowledgement: %v", c)
		}

		a.send(a.device("bob", "web"), `{"to_user":"alice","text":"r1"}`)
		if m := expectTexts(t, alice, "r1")[0]; m.FromUser != "bob" || m.FromDevice != "web" || m.Seq != 3 {
			t.Fatalf("alice received %v", m)
		}
		// bob's phone receives what bob sent from the web.
		expectTexts(t, bob, "r1")
	})
}

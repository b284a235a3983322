package pgstore

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	qimpb "github.com/qim-im/qim/proto"
)

// testMessage returns a text message of about 100 bytes from one user to
// another.
func testMessage(from, to, clientMsgID string) *qimpb.Message {
	payload, err := proto.Marshal(&qimpb.MessageTxt{Txt: strings.Repeat("x", 90)})
	if err != nil {
		panic(err)
	}
	return &qimpb.Message{
		Type:        qimpb.MessageType_TXT,
		Payload:     payload,
		ToUser:      to,
		FromUser:    from,
		FromDevice:  "phone",
		ClientMsgId: clientMsgID,
	}
}

func unmarshalT(t testing.TB, v []byte) *qimpb.Message {
	t.Helper()
	m := new(qimpb.Message)
	if err := proto.Unmarshal(v, m); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	return m
}

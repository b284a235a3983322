package qimpb

import (
	"bufio"
	"bytes"
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"
)

// benchPush is a pushed 1:1 message as the server encodes it: 100 bytes of
// text and every server-set field.
func benchPush(tb testing.TB) *Message {
	tb.Helper()
	payload, err := proto.Marshal(&MessageTxt{Txt: fmt.Sprintf("%0100d", 0)})
	if err != nil {
		tb.Fatal(err)
	}
	return &Message{
		Type: MessageType_TXT, Payload: payload, ToUser: "bob", FromUser: "alice", FromDevice: "phone",
		Id: 123456789, Seq: 4242, Timestamp: 1795000000000, ClientMsgId: "0123456789abcdef0123456789abcdef",
	}
}

// BenchmarkEncodeFrame measures encoding one push frame: the message, the
// REQUEST around it and the Command envelope, as the server does once per
// routed message.
func BenchmarkEncodeFrame(b *testing.B) {
	m := benchPush(b)
	b.ReportAllocs()
	for b.Loop() {
		payload, err := proto.Marshal(m)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := EncodeFrame(CommandType_REQUEST, &Request{Type: RequestType_MESSAGE, RequestId: m.Seq, Payload: payload}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadFrame measures reading and decoding frames of that push
// from a buffered stream, down to the message, as a device does.
func BenchmarkReadFrame(b *testing.B) {
	m := benchPush(b)
	payload, _ := proto.Marshal(m)
	frame, err := EncodeFrame(CommandType_REQUEST, &Request{Type: RequestType_MESSAGE, RequestId: m.Seq, Payload: payload})
	if err != nil {
		b.Fatal(err)
	}
	stream := bytes.Repeat(frame, 1024)
	src := bytes.NewReader(stream)
	r := bufio.NewReader(src)
	var (
		cmd Command
		req Request
		msg Message
		buf []byte
	)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i%1024 == 0 {
			src.Reset(stream)
			r.Reset(src)
		}
		if buf, err = ReadFrame(r, 1<<20, buf, &cmd); err != nil {
			b.Fatal(err)
		}
		if err := proto.Unmarshal(cmd.Payload, &req); err != nil {
			b.Fatal(err)
		}
		if err := proto.Unmarshal(req.Payload, &msg); err != nil {
			b.Fatal(err)
		}
	}
}

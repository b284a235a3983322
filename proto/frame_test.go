package qimpb

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"

	"google.golang.org/protobuf/proto"
)

func mustFrame(t testing.TB, ct CommandType, m proto.Message) []byte {
	t.Helper()
	f, err := EncodeFrame(ct, m)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestFrameRoundTrip(t *testing.T) {
	var stream []byte
	want := []proto.Message{
		&Connect{Org: "demo", Appkey: "demo", User: "alice", Token: "v1.1.x", Device: "phone"},
		&Request{Type: RequestType_MESSAGE, RequestId: 7},
		&Response{Code: int32(Code_FORBIDDEN), Reason: "no", RequestId: 7},
		&Disconnect{Code: int32(Code_GOING_AWAY)},
	}
	cts := []CommandType{CommandType_CONNECT, CommandType_REQUEST, CommandType_RESPONSE, CommandType_DISCONNECT}
	for i, m := range want {
		stream = append(stream, mustFrame(t, cts[i], m)...)
	}
	r := bufio.NewReader(bytes.NewReader(stream))
	var buf []byte
	for i := range want {
		var cmd Command
		var err error
		buf, err = ReadFrame(r, DefaultMaxFrame, buf, &cmd)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if cmd.Command != cts[i] || cmd.Version != Version {
			t.Fatalf("frame %d: got %v v%d", i, cmd.Command, cmd.Version)
		}
		got := want[i].ProtoReflect().New().Interface()
		if err := proto.Unmarshal(cmd.Payload, got); err != nil || !proto.Equal(got, want[i]) {
			t.Fatalf("frame %d: payload %v, err %v", i, got, err)
		}
	}
	var cmd Command
	if _, err := ReadFrame(r, DefaultMaxFrame, buf, &cmd); err != io.EOF {
		t.Fatalf("at end: %v, want io.EOF", err)
	}
}

func TestReadFrameErrors(t *testing.T) {
	valid := mustFrame(t, CommandType_CONNECT, &Connect{User: "alice"})
	for _, tt := range []struct {
		name string
		in   []byte
		max  int
		want error
	}{
		{"declared length over the limit", []byte{0x81, 0x08}, 1024, ErrFrameTooLarge}, // 1025
		{"huge declared length, no body", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, DefaultMaxFrame, ErrFrameTooLarge},
		{"varint overflow", bytes.Repeat([]byte{0xff}, 11), DefaultMaxFrame, ErrBadFrame},
		{"truncated varint", []byte{0x80}, DefaultMaxFrame, io.ErrUnexpectedEOF},
		{"truncated body", valid[:len(valid)-1], DefaultMaxFrame, io.ErrUnexpectedEOF},
		{"body not a command", []byte{0x02, 0xff, 0xff}, DefaultMaxFrame, ErrBadFrame},
		{"empty stream", nil, DefaultMaxFrame, io.EOF},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var cmd Command
			_, err := ReadFrame(bufio.NewReader(bytes.NewReader(tt.in)), tt.max, nil, &cmd)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

// TestFrameTooLargeReadsNoBody checks that an oversized frame is refused
// from its length: the reader consumed only the length bytes.
func TestFrameTooLargeReadsNoBody(t *testing.T) {
	in := append([]byte{0x80, 0x80, 0x04}, bytes.Repeat([]byte{'x'}, 100)...) // 65536 declared
	br := bytes.NewReader(in)
	r := bufio.NewReaderSize(br, 16)
	var cmd Command
	if _, err := ReadFrame(r, 1024, nil, &cmd); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("got %v", err)
	}
	if consumed := len(in) - br.Len(); consumed > 16 {
		t.Fatalf("read %d bytes of the stream, want at most one buffer fill", consumed)
	}
}

// FuzzFrame feeds arbitrary bytes to the frame decoder: it must never
// panic, never allocate for a body larger than the limit, and anything it
// accepts must encode back to a frame it accepts again.
func FuzzFrame(f *testing.F) {
	txt, _ := proto.Marshal(&MessageTxt{Txt: "hello"})
	msg, _ := proto.Marshal(&Message{Type: MessageType_TXT, Payload: txt, ToUser: "bob", ClientMsgId: "c1"})
	for _, seed := range [][]byte{
		mustFrame(f, CommandType_CONNECT, &Connect{Org: "demo", Appkey: "demo", User: "alice", Token: "v1.1.x", Device: "d"}),
		mustFrame(f, CommandType_REQUEST, &Request{Type: RequestType_MESSAGE, RequestId: 1, Payload: msg, Opts: []*Option{{Offline: true}}}),
		mustFrame(f, CommandType_RESPONSE, &Response{Code: 0, RequestId: 1}),
		mustFrame(f, CommandType_DISCONNECT, &Disconnect{Code: 17, Reason: "bye"}),
		{0xff, 0xff, 0xff, 0xff, 0x0f},
		{0x00},
	} {
		f.Add(seed)
	}
	const max = 4096
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bufio.NewReader(bytes.NewReader(in))
		var buf []byte
		for range 16 {
			var cmd Command
			var err error
			buf, err = ReadFrame(r, max, buf, &cmd)
			if cap(buf) > max {
				t.Fatalf("buffer of %d bytes for a limit of %d", cap(buf), max)
			}
			if err != nil {
				return
			}
			again, err := AppendFrame(nil, &cmd)
			if err != nil {
				t.Fatalf("re-encode: %v", err)
			}
			var cmd2 Command
			if _, err := ReadFrame(bufio.NewReader(bytes.NewReader(again)), max+16, nil, &cmd2); err != nil {
				t.Fatalf("re-read: %v", err)
			}
			if !proto.Equal(&cmd, &cmd2) {
				t.Fatalf("round trip changed %v into %v", &cmd, &cmd2)
			}
		}
	})
}

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

// marshalFrame is the frame of a Command holding inner, its payload
// marshalled first, as the encoders did before they wrote envelopes by hand.
func marshalFrame(t *testing.T, ct CommandType, inner proto.Message) []byte {
	t.Helper()
	payload, err := proto.Marshal(inner)
	if err != nil {
		t.Fatal(err)
	}
	f, err := AppendFrame(nil, &Command{Version: Version, Command: ct, Payload: payload})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestEncodersMatchMarshal checks that the hand-written envelopes are byte
// for byte what proto.Marshal gives, zero values and long varints included.
func TestEncodersMatchMarshal(t *testing.T) {
	long := &Message{Type: MessageType_TXT, Payload: bytes.Repeat([]byte{'x'}, 300), ToUser: "bob", FromUser: "alice", Seq: 1 << 40}
	ack := &MessageAck{Id: 1<<63 + 5, Seq: 300, Timestamp: 1795000000000, Duplicate: true}
	big := &Message{Payload: bytes.Repeat([]byte{'y'}, 70000)}
	for _, tt := range []struct {
		name string
		got  func() ([]byte, error)
		want func(t *testing.T) []byte
	}{
		{"encode empty connect", func() ([]byte, error) { return EncodeFrame(CommandType_CONNECT, &Connect{}) },
			func(t *testing.T) []byte { return marshalFrame(t, CommandType_CONNECT, &Connect{}) }},
		{"encode nil", func() ([]byte, error) { return EncodeFrame(CommandType_DISCONNECT, nil) },
			func(t *testing.T) []byte { return marshalFrame(t, CommandType_DISCONNECT, nil) }},
		{"encode request", func() ([]byte, error) {
			return EncodeFrame(CommandType_REQUEST, &Request{Type: RequestType_GROUP, RequestId: 9, Opts: []*Option{{Offline: true}}})
		}, func(t *testing.T) []byte {
			return marshalFrame(t, CommandType_REQUEST, &Request{Type: RequestType_GROUP, RequestId: 9, Opts: []*Option{{Offline: true}}})
		}},
		{"encode large", func() ([]byte, error) { return EncodeFrame(CommandType_RESPONSE, big) },
			func(t *testing.T) []byte { return marshalFrame(t, CommandType_RESPONSE, big) }},
		{"request push", func() ([]byte, error) { return AppendRequestFrame(nil, RequestType_MESSAGE, long.Seq, long) },
			func(t *testing.T) []byte {
				p, _ := proto.Marshal(long)
				return marshalFrame(t, CommandType_REQUEST, &Request{RequestId: long.Seq, Payload: p})
			}},
		{"request empty", func() ([]byte, error) { return AppendRequestFrame(nil, RequestType_MESSAGE, 0, &Message{}) },
			func(t *testing.T) []byte { return marshalFrame(t, CommandType_REQUEST, &Request{}) }},
		{"request contact", func() ([]byte, error) {
			return AppendRequestFrame(nil, RequestType_CONTACT, 1, &ContactRequest{Op: ContactOp_CONTACT_LIST})
		}, func(t *testing.T) []byte {
			p, _ := proto.Marshal(&ContactRequest{Op: ContactOp_CONTACT_LIST})
			return marshalFrame(t, CommandType_REQUEST, &Request{Type: RequestType_CONTACT, RequestId: 1, Payload: p})
		}},
		{"request large", func() ([]byte, error) { return AppendRequestFrame(nil, RequestType_MESSAGE, 3, big) },
			func(t *testing.T) []byte {
				p, _ := proto.Marshal(big)
				return marshalFrame(t, CommandType_REQUEST, &Request{RequestId: 3, Payload: p})
			}},
		{"response ok", func() ([]byte, error) { return AppendResponseFrame(nil, Code_OK, "", 0, nil) },
			func(t *testing.T) []byte { return marshalFrame(t, CommandType_RESPONSE, &Response{}) }},
		{"response ack", func() ([]byte, error) { return AppendResponseFrame(nil, Code_OK, "", 1<<35, ack) },
			func(t *testing.T) []byte {
				p, _ := proto.Marshal(ack)
				return marshalFrame(t, CommandType_RESPONSE, &Response{RequestId: 1 << 35, Payload: p})
			}},
		{"response empty payload", func() ([]byte, error) { return AppendResponseFrame(nil, Code_OK, "", 4, &MessageAck{}) },
			func(t *testing.T) []byte { return marshalFrame(t, CommandType_RESPONSE, &Response{RequestId: 4}) }},
		{"response error", func() ([]byte, error) {
			return AppendResponseFrame(nil, Code_RATE_LIMITED, "too many requests; slow down", 77, nil)
		}, func(t *testing.T) []byte {
			return marshalFrame(t, CommandType_RESPONSE, &Response{Code: int32(Code_RATE_LIMITED), Reason: "too many requests; slow down", RequestId: 77})
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.got()
			if err != nil {
				t.Fatal(err)
			}
			if want := tt.want(t); !bytes.Equal(got, want) {
				t.Fatalf("got  %x\nwant %x", got, want)
			}
		})
	}
}

// TestAppendFrameKeepsPrefix checks that the Append encoders add to what
// the buffer holds.
func TestAppendFrameKeepsPrefix(t *testing.T) {
	b, err := AppendRequestFrame([]byte("abc"), RequestType_MESSAGE, 1, &Message{ToUser: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	b, err = AppendResponseFrame(b, Code_OK, "", 2, &MessageAck{Seq: 2})
	if err != nil {
		t.Fatal(err)
	}
	if string(b[:3]) != "abc" {
		t.Fatalf("prefix overwritten: %q", b[:3])
	}
	r := bufio.NewReader(bytes.NewReader(b[3:]))
	for _, want := range []CommandType{CommandType_REQUEST, CommandType_RESPONSE} {
		var cmd Command
		if _, err := ReadFrame(r, DefaultMaxFrame, nil, &cmd); err != nil || cmd.Command != want {
			t.Fatalf("got %v, %v; want %v", cmd.Command, err, want)
		}
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

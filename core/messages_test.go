package core

import (
	"bytes"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// checkDecodeText compares decodeText with proto.Unmarshal of a MessageTxt.
func checkDecodeText(t *testing.T, in []byte) {
	t.Helper()
	var want qimpb.MessageTxt
	wantErr := proto.Unmarshal(in, &want)
	got, ok := decodeText(in)
	if ok != (wantErr == nil) {
		t.Fatalf("decodeText(%x) ok=%v, proto.Unmarshal err=%v", in, ok, wantErr)
	}
	if ok && string(got) != want.Txt {
		t.Fatalf("decodeText(%x) = %q, proto.Unmarshal gives %q", in, got, want.Txt)
	}
}

func textSeeds() [][]byte {
	valid, _ := proto.Marshal(&qimpb.MessageTxt{Txt: "hello, world"})
	tag := func(num protowire.Number, typ protowire.Type) []byte { return protowire.AppendTag(nil, num, typ) }
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	return [][]byte{
		nil,
		valid,
		cat(valid, valid[:len(valid)-1]), // truncated second text
		cat(valid, protowire.AppendString(tag(1, protowire.BytesType), "last wins")),
		protowire.AppendString(tag(1, protowire.BytesType), "\xff\xfe"),                               // not UTF-8
		protowire.AppendString(tag(2, protowire.BytesType), "\xff"),                                   // unknown field, any bytes
		cat(valid, protowire.AppendVarint(tag(1, protowire.VarintType), 7)),                           // field 1, wrong wire type
		cat(valid, protowire.AppendFixed32(tag(9, protowire.Fixed32Type), 1)),                         // unknown fixed32
		cat(tag(3, protowire.StartGroupType), valid, tag(3, protowire.EndGroupType)),                  // group
		cat(tag(3, protowire.StartGroupType), valid),                                                  // unterminated group
		tag(4, protowire.EndGroupType),                                                                // stray end
		{0x00, 0x00},                                                                                  // field 0
		protowire.AppendVarint(protowire.AppendVarint(nil, uint64(protowire.MaxValidNumber+1)<<3), 1), // number too large
		{0x0a, 0x80},             // bad length
		{0x0a, 0x05, 'a'},        // short
		{0x08, 0xff, 0xff, 0xff}, // truncated varint
	}
}

func TestDecodeText(t *testing.T) {
	for _, in := range textSeeds() {
		checkDecodeText(t, in)
	}
}

// FuzzDecodeText checks that decodeText accepts and returns exactly what
// proto.Unmarshal does.
func FuzzDecodeText(f *testing.F) {
	for _, in := range textSeeds() {
		f.Add(in)
	}
	f.Fuzz(checkDecodeText)
}

// TestCheckMessage is the table of message validation: recipients, ids,
// types and payloads, and group membership.
func TestCheckMessage(t *testing.T) {
	h := newHub(t, Config{})
	g := group(t, h, "app", "alice", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_CREATE, Name: "g"}).Group.Id
	txt := func(s string) []byte { b, _ := proto.Marshal(&qimpb.MessageTxt{Txt: s}); return b }
	img := func(u string) []byte { b, _ := proto.Marshal(&qimpb.MessageImg{Url: u}); return b }
	for _, tt := range []struct {
		name     string
		m        *qimpb.Message
		want     qimpb.Code
		wantConv string
	}{
		{"text to a user", &qimpb.Message{ToUser: "bob", Payload: txt("hi")}, qimpb.Code_OK, store.DirectConv("alice", "bob")},
		{"text to oneself", &qimpb.Message{ToUser: "alice", Payload: txt("note")}, qimpb.Code_OK, store.DirectConv("alice", "alice")},
		{"text to a group", &qimpb.Message{ToGroup: g, Payload: txt("hi all")}, qimpb.Code_OK, store.GroupConv(g)},
		{"image", &qimpb.Message{ToUser: "bob", Type: qimpb.MessageType_IMAGE, Payload: img("https://example.com/a.png")}, qimpb.Code_OK, store.DirectConv("alice", "bob")},
		{"no recipient", &qimpb.Message{Payload: txt("hi")}, qimpb.Code_INVALID_ARGUMENT, ""},
		{"two recipients", &qimpb.Message{ToUser: "bob", ToGroup: g, Payload: txt("hi")}, qimpb.Code_INVALID_ARGUMENT, ""},
		{"bad user id", &qimpb.Message{ToUser: "bo b", Payload: txt("hi")}, qimpb.Code_INVALID_ARGUMENT, ""},
		{"long client_msg_id", &qimpb.Message{ToUser: "bob", ClientMsgId: strings.Repeat("x", 65), Payload: txt("hi")}, qimpb.Code_INVALID_ARGUMENT, ""},
		{"empty text", &qimpb.Message{ToUser: "bob", Payload: txt("")}, qimpb.Code_INVALID_ARGUMENT, ""},
		{"long text", &qimpb.Message{ToUser: "bob", Payload: txt(strings.Repeat("x", 4097))}, qimpb.Code_INVALID_ARGUMENT, ""},
		{"longest text", &qimpb.Message{ToUser: "bob", Payload: txt(strings.Repeat("x", 4096))}, qimpb.Code_OK, store.DirectConv("alice", "bob")},
		{"text not UTF-8", &qimpb.Message{ToUser: "bob", Payload: []byte{0x0a, 0x02, 0xff, 0xfe}}, qimpb.Code_BAD_REQUEST, ""},
		{"text does not decode", &qimpb.Message{ToUser: "bob", Payload: []byte{0x0a, 0x05, 'a'}}, qimpb.Code_BAD_REQUEST, ""},
		{"unknown type", &qimpb.Message{ToUser: "bob", Type: 42, Payload: txt("hi")}, qimpb.Code_INVALID_ARGUMENT, ""},
		{"image, not http", &qimpb.Message{ToUser: "bob", Type: qimpb.MessageType_IMAGE, Payload: img("file:///etc/passwd")}, qimpb.Code_INVALID_ARGUMENT, ""},
		{"image, no host", &qimpb.Message{ToUser: "bob", Type: qimpb.MessageType_IMAGE, Payload: img("https://")}, qimpb.Code_INVALID_ARGUMENT, ""},
		{"image, long URL", &qimpb.Message{ToUser: "bob", Type: qimpb.MessageType_IMAGE, Payload: img("https://example.com/" + strings.Repeat("x", 2048))}, qimpb.Code_INVALID_ARGUMENT, ""},
		{"image does not decode", &qimpb.Message{ToUser: "bob", Type: qimpb.MessageType_IMAGE, Payload: []byte{0xff}}, qimpb.Code_BAD_REQUEST, ""},
		{"no such group", &qimpb.Message{ToGroup: "gnosuchgroup0000", Payload: txt("hi")}, qimpb.Code_NOT_FOUND, ""},
		{"bad group id", &qimpb.Message{ToGroup: "g/x", Payload: txt("hi")}, qimpb.Code_NOT_FOUND, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			conv, err := h.CheckMessage(t.Context(), "app", "alice", tt.m)
			wantCode(t, tt.name, err, tt.want)
			if conv != tt.wantConv {
				t.Fatalf("conversation %q, want %q", conv, tt.wantConv)
			}
		})
	}
	// A group of which the sender is not a member.
	_, err := h.CheckMessage(t.Context(), "app", "bob", &qimpb.Message{ToGroup: g, Payload: txt("hi")})
	wantCode(t, "not a member", err, qimpb.Code_FORBIDDEN)
	// Nor in another application.
	_, err = h.CheckMessage(t.Context(), "other", "alice", &qimpb.Message{ToGroup: g, Payload: txt("hi")})
	wantCode(t, "another application's group", err, qimpb.Code_NOT_FOUND)
}

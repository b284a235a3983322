package core

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	qimpb "github.com/qim-im/qim/proto"
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

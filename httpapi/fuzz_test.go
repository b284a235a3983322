package httpapi

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/core"
	qimpb "github.com/qim-im/qim/proto"
)

// FuzzDecodeJSON feeds request bodies to the decoder of every JSON request
// the API takes: it must never panic, and a body it accepts must encode and
// decode again to the same message.
func FuzzDecodeJSON(f *testing.F) {
	for _, seed := range []string{
		`{"user":"alice","ttl_seconds":3600}`,
		`{"to_user":"bob","text":"hi","client_msg_id":"c1"}`,
		`{"to_group":"g1","type":"IMAGE","image_url":"https://x/y.png","online_only":true,"system":true}`,
		`{"name":"team"}`, `{"user":"bob"}`, `{"ttl_seconds":"3600"}`, `{}`, ``, `null`,
		`{"type":7}`, `{"to_user":"\u0000"}`, `{"ttl_seconds":1e400}`,
		`{"seq":3}`, `{"seq":"18446744073709551615"}`, `{"hide_read_receipts":true}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, m := range []proto.Message{&qimpb.MintTokenRequest{}, &qimpb.SendMessageRequest{}, &qimpb.GroupRequest{},
			&qimpb.MarkReadRequest{}, &qimpb.Settings{}} {
			err := decodeJSON(b, m)
			if err != nil {
				if code, _ := core.CodeOf(err); code != qimpb.Code_BAD_REQUEST {
					t.Fatalf("decode error with code %v: %v", code, err)
				}
				continue
			}
			out, err := marshalJSON.Marshal(m)
			if err != nil {
				t.Fatalf("accepted %q but cannot encode it: %v", b, err)
			}
			again := m.ProtoReflect().New().Interface()
			if err := decodeJSON(out, again); err != nil {
				t.Fatalf("cannot decode own encoding %q: %v", out, err)
			}
			if !proto.Equal(m, again) {
				t.Fatalf("round trip of %q changed the message", b)
			}
		}
	})
}

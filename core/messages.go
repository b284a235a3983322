package core

import (
	"context"
	"net/url"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// Limits on request contents.
const (
	maxText        = 4096
	maxURL         = 2048
	maxClientMsgID = 64
	maxGroupName   = 128
	defaultHistory = 50
	maxHistory     = 500
	// frameOverhead is room for the Command and Response around a result.
	frameOverhead = 64
)

// CheckMessage validates a message that user of app sends, and returns its
// conversation: exactly one recipient, a known type with a valid payload,
// and, for a group, that user is a member. Every refusal is an *Error.
func (h *Hub) CheckMessage(ctx context.Context, app, user string, m *qimpb.Message) (conv string, err error) {
	if (m.ToUser == "") == (m.ToGroup == "") {
		return "", Errorf(qimpb.Code_INVALID_ARGUMENT, "set exactly one of to_user and to_group")
	}
	if len(m.ClientMsgId) > maxClientMsgID {
		return "", Errorf(qimpb.Code_INVALID_ARGUMENT, "client_msg_id longer than %d bytes", maxClientMsgID)
	}
	if err := checkContent(m); err != nil {
		return "", err
	}
	return h.Conversation(ctx, app, user, m.ToUser, m.ToGroup)
}

// checkContent validates a message's type and payload.
func checkContent(m *qimpb.Message) error {
	switch m.Type {
	case qimpb.MessageType_TXT:
		txt, ok := decodeText(m.Payload)
		if !ok {
			return Errorf(qimpb.Code_BAD_REQUEST, "TXT payload does not decode")
		}
		if len(txt) == 0 || len(txt) > maxText {
			return Errorf(qimpb.Code_INVALID_ARGUMENT, "text must be 1 to %d bytes of UTF-8", maxText)
		}
	case qimpb.MessageType_IMAGE:
		var img qimpb.MessageImg
		if err := proto.Unmarshal(m.Payload, &img); err != nil {
			return Errorf(qimpb.Code_BAD_REQUEST, "IMAGE payload does not decode")
		}
		if len(img.Url) > maxURL {
			return Errorf(qimpb.Code_INVALID_ARGUMENT, "image URL longer than %d bytes", maxURL)
		}
		u, err := url.Parse(img.Url)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return Errorf(qimpb.Code_INVALID_ARGUMENT, "image URL must be an http or https URL")
		}
	default:
		return Errorf(qimpb.Code_INVALID_ARGUMENT, "unknown message type %d", m.Type)
	}
	return nil
}

// decodeText returns the text of an encoded MessageTxt without copying it,
// or false for exactly the payloads that proto.Unmarshal refuses: a
// malformed field, or a text that is not UTF-8. It is what checkContent
// needs of a TXT message, without decoding it into a MessageTxt and a
// string of its own.
func decodeText(b []byte) (txt []byte, ok bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num > protowire.MaxValidNumber {
			return nil, false
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || !utf8.Valid(v) {
				return nil, false
			}
			txt, b = v, b[n:]
			continue
		}
		// Another field, or field 1 with another wire type: proto.Unmarshal
		// keeps it as an unknown field if it is well formed.
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil, false
		}
		b = b[n:]
	}
	return txt, true
}

// ConvOf returns the conversation key of a message.
func ConvOf(m *qimpb.Message) string {
	if m.ToGroup != "" {
		return store.GroupConv(m.ToGroup)
	}
	return store.DirectConv(m.FromUser, m.ToUser)
}

// IsGroupConv reports whether conv is the conversation of a group.
func IsGroupConv(conv string) bool { return strings.HasPrefix(conv, "g:") }

package push

import (
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	qimpb "github.com/qim-im/qim/proto"
)

// PreviewRunes is the most characters of a TXT message a preview holds.
const PreviewRunes = 100

// ImagePreview is the preview of an IMAGE message.
const ImagePreview = "[image]"

// jsonOptions encode a notification: the field names of push.proto, every
// field present even when empty, so that a gateway need not know proto3's
// defaults.
var jsonOptions = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// Notification returns the notification of msg, a stored message of
// conversation conv of app (store.AppID), for user. preview says whether
// it carries the beginning of the message.
func Notification(app, conv string, msg *qimpb.Message, user string, preview bool) *qimpb.PushNotification {
	org, appkey, _ := strings.Cut(app, "/")
	n := &qimpb.PushNotification{
		Id:           IdempotencyKey(app, msg.GetId(), user),
		Org:          org,
		Appkey:       appkey,
		User:         user,
		Conversation: conv,
		FromUser:     msg.GetFromUser(),
		ToGroup:      msg.GetToGroup(),
		Seq:          msg.GetSeq(),
		MessageId:    msg.GetId(),
		Timestamp:    msg.GetTimestamp(),
		Type:         msg.GetType(),
	}
	if preview {
		n.Preview = Preview(msg)
	}
	return n
}

// Preview returns the preview of msg: the first PreviewRunes characters of
// a TXT message, ImagePreview for an IMAGE, and "" for anything else or a
// payload that does not decode.
func Preview(msg *qimpb.Message) string {
	switch msg.GetType() {
	case qimpb.MessageType_TXT:
		var t qimpb.MessageTxt
		if proto.Unmarshal(msg.GetPayload(), &t) != nil {
			return ""
		}
		return firstRunes(strings.ToValidUTF8(t.GetTxt(), "\uFFFD"), PreviewRunes)
	case qimpb.MessageType_IMAGE:
		return ImagePreview
	}
	return ""
}

// Marshal returns the JSON body of n, as the worker POSTs it.
func Marshal(n *qimpb.PushNotification) ([]byte, error) {
	return jsonOptions.Marshal(n)
}

// Unmarshal decodes a notification's JSON body, ignoring fields newer
// than this package, as a gateway written in Go reads it.
func Unmarshal(body []byte) (*qimpb.PushNotification, error) {
	n := new(qimpb.PushNotification)
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(body, n); err != nil {
		return nil, err
	}
	return n, nil
}

// firstRunes returns the first n runes of s.
func firstRunes(s string, n int) string {
	i := 0
	for j := range s {
		if i == n {
			return s[:j]
		}
		i++
	}
	return s
}

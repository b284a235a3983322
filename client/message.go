package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	qimpb "github.com/qim-im/qim/proto"
)

// Peer names a conversation: a user (1:1) or a group. Exactly one field is
// set. Peer is comparable and is the key of a Client's stream map.
type Peer struct {
	User  string
	Group string
}

// ToUser returns the Peer of the 1:1 conversation with user.
func ToUser(user string) Peer { return Peer{User: user} }

// ToGroup returns the Peer of group id.
func ToGroup(id string) Peer { return Peer{Group: id} }

// String returns "@user" or "#group".
func (p Peer) String() string {
	if p.Group != "" {
		return "#" + p.Group
	}
	return "@" + p.User
}

// IsGroup reports whether p names a group.
func (p Peer) IsGroup() bool { return p.Group != "" }

func (p Peer) validate() error {
	if (p.User == "") == (p.Group == "") {
		return errors.New("qim: a peer names exactly one of a user and a group")
	}
	return nil
}

// Outgoing is a message to send. ImageURL, when set, makes it an IMAGE
// message and Text is not sent; otherwise it is a TXT message.
type Outgoing struct {
	Text     string
	ImageURL string
	// ClientMsgID de-duplicates retries: a send with an id this user has
	// already used is not stored again. Empty means a new random 128-bit
	// hex id.
	ClientMsgID string
	// NoOffline delivers the message only to devices connected now, without
	// storing it (Option.offline = false). Such a message has seq 0, is not
	// de-duplicated, and is therefore never retried by the library.
	NoOffline bool
}

// Send sends m to the conversation to, on that conversation's stream, and
// returns the server's acknowledgement once the message is stored. A send
// whose stream ends before the answer is retried on a new stream with the
// same ClientMsgID, so that the message is stored once; the ack then may
// have Duplicate set. Send is safe for concurrent use.
func (c *Client) Send(ctx context.Context, to Peer, m Outgoing) (*qimpb.MessageAck, error) {
	if err := to.validate(); err != nil {
		return nil, err
	}
	msg := &qimpb.Message{ToUser: to.User, ToGroup: to.Group, ClientMsgId: m.ClientMsgID}
	if msg.ClientMsgId == "" {
		msg.ClientMsgId = NewClientMsgID()
	}
	var body proto.Message = &qimpb.MessageTxt{Txt: m.Text}
	if m.ImageURL != "" {
		msg.Type = qimpb.MessageType_IMAGE
		body = &qimpb.MessageImg{Url: m.ImageURL}
	}
	var err error
	if msg.Payload, err = proto.Marshal(body); err != nil {
		return nil, fmt.Errorf("qim: encode message: %w", err)
	}
	payload, err := proto.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("qim: encode message: %w", err)
	}
	req := &qimpb.Request{
		Type:    qimpb.RequestType_MESSAGE,
		Payload: payload,
		Opts:    []*qimpb.Option{{Offline: !m.NoOffline}},
	}
	resp, err := c.do(ctx, to, req, !m.NoOffline)
	if err != nil {
		return nil, err
	}
	ack := new(qimpb.MessageAck)
	if err := proto.Unmarshal(resp.GetPayload(), ack); err != nil {
		return nil, fmt.Errorf("qim: decode MessageAck: %w", err)
	}
	return ack, nil
}

// NewClientMsgID returns a random 128-bit id in hex, the ClientMsgID Send
// uses when none is given.
func NewClientMsgID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails
	return hex.EncodeToString(b[:])
}

// Text returns the text of a TXT message, or "" for any other message.
func Text(m *qimpb.Message) string {
	if m.GetType() != qimpb.MessageType_TXT {
		return ""
	}
	var t qimpb.MessageTxt
	if proto.Unmarshal(m.GetPayload(), &t) != nil {
		return ""
	}
	return t.GetTxt()
}

// ImageURL returns the URL of an IMAGE message, or "" for any other message.
func ImageURL(m *qimpb.Message) string {
	if m.GetType() != qimpb.MessageType_IMAGE {
		return ""
	}
	var img qimpb.MessageImg
	if proto.Unmarshal(m.GetPayload(), &img) != nil {
		return ""
	}
	return img.GetUrl()
}

// ConvOf returns the conversation of m as seen by user me: the group of a
// group message; for a 1:1 message the sender when that is not me, else the
// addressee (PROTOCOL.md 5.3).
func ConvOf(me string, m *qimpb.Message) Peer {
	switch {
	case m.GetToGroup() != "":
		return ToGroup(m.GetToGroup())
	case m.GetFromUser() != me:
		return ToUser(m.GetFromUser())
	default:
		return ToUser(m.GetToUser())
	}
}

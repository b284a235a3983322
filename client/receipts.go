package client

import (
	"context"
	"fmt"
	"math"

	"google.golang.org/protobuf/proto"

	qimpb "github.com/qim-im/qim/proto"
)

// Read tells the server that the user has seen the messages of to up to
// seq (PROTOCOL.md 11.2): the user's read cursor of the conversation moves
// there, on all its devices, unless it is already further. The result is
// the cursor and the unread count after the request, once the cursor is
// stored. The other user of a 1:1 conversation then gets a Receipt with
// read (unless the user hides read receipts, SetSettings), and the user's
// other devices one with read_private. seq must be between 1 and the
// conversation's last seq. A repeated READ changes nothing, so it may go
// in 0-RTT and is sent again after a lost connection.
func (c *Client) Read(ctx context.Context, to Peer, seq uint64) (*qimpb.ReadResult, error) {
	if err := to.validate(); err != nil {
		return nil, err
	}
	res := new(qimpb.ReadResult)
	if err := c.call(ctx, qimpb.RequestType_READ, &qimpb.ReadRequest{ToUser: to.User, ToGroup: to.Group, Seq: seq}, res, true); err != nil {
		return nil, err
	}
	c.marks.read(to, c.me, res.GetReadSeq())
	return res, nil
}

// Inbox returns the user's conversations with their unread counts and, for
// 1:1 conversations, how far the other user received and read them
// (PROTOCOL.md 11.2): groups first, by id, then 1:1 conversations, by user.
// Connected().Inbox holds the same list as of the last CONNECT, when the
// server granted FEATURE_INBOX.
func (c *Client) Inbox(ctx context.Context) ([]*qimpb.ConversationState, error) {
	res := new(qimpb.InboxResult)
	if err := c.call(ctx, qimpb.RequestType_INBOX, nil, res, true); err != nil {
		return nil, err
	}
	c.marks.inbox(c.me, res.GetConversations())
	return res.GetConversations(), nil
}

// SetSettings stores the user's settings, for all its devices, and returns
// those in force, which may differ (a server that turned read receipts off
// answers HideReadReceipts true whatever was asked). Connected().Settings
// holds them as of the last CONNECT.
func (c *Client) SetSettings(ctx context.Context, s *qimpb.Settings) (*qimpb.Settings, error) {
	res := new(qimpb.Settings)
	if err := c.call(ctx, qimpb.RequestType_SETTINGS, s, res, true); err != nil {
		return nil, err
	}
	return res, nil
}

// GroupReceipts asks how far the members of group received and read its
// message seq (PROTOCOL.md 11.3): the result's Count counts the members
// other than the sender, and Receipts is one page of the members'
// receipts, sorted by user, starting after the member after ("": the
// first); NextUser is the after of the next page, "" after the last. limit
// 0 means the server's default (50); it caps it at 500. With watch, the
// connection also gets a ReceiptCount event for (group, seq) whenever the
// counts change, at most once a second, until the connection ends, the user
// leaves the group or watches another seq of it. A watch does not outlive
// its connection: after a reconnection, ask again.
func (c *Client) GroupReceipts(ctx context.Context, group string, seq uint64, after string, limit int, watch bool) (*qimpb.GroupResult, error) {
	if limit < 0 || limit > math.MaxUint32 {
		return nil, fmt.Errorf("qim: group receipts limit %d out of range", limit)
	}
	return c.group(ctx, &qimpb.GroupRequest{
		Op:        qimpb.GroupOp_GROUP_RECEIPTS,
		GroupId:   group,
		Seq:       seq,
		AfterUser: after,
		Limit:     uint32(limit),
		Watch:     watch,
	})
}

// call sends a request of type t with payload in (nil: none) on the
// general stream, the stream of the requests that are not messages, and
// decodes its answer into out. With retry, the request is sent again when
// its stream or connection ends (see Client.do).
func (c *Client) call(ctx context.Context, t qimpb.RequestType, in, out proto.Message, retry bool) error {
	req := &qimpb.Request{Type: t}
	if in != nil {
		var err error
		if req.Payload, err = proto.Marshal(in); err != nil {
			return fmt.Errorf("qim: encode %v request: %w", t, err)
		}
	}
	resp, err := c.do(ctx, Peer{}, req, retry)
	if err != nil {
		return err
	}
	if err := proto.Unmarshal(resp.GetPayload(), out); err != nil {
		return fmt.Errorf("qim: decode %v answer: %w", t, err)
	}
	return nil
}

package client

import (
	"context"
	"fmt"
	"math"

	"google.golang.org/protobuf/proto"

	qimpb "github.com/qim-im/qim/proto"
)

// CreateGroup creates a group named name, owned by the caller, and returns
// it. It is not retried when its stream is reset or its connection ends
// (ErrStreamEnded), since a retry could create a second group; it is sent
// again when the server finished the stream without answering it, which
// means the server did not run it (PROTOCOL.md 3.3).
func (c *Client) CreateGroup(ctx context.Context, name string) (*qimpb.GroupInfo, error) {
	res, err := c.group(ctx, &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_CREATE, Name: name})
	if err != nil {
		return nil, err
	}
	return res.GetGroup(), nil
}

// JoinGroup joins group id and returns it.
func (c *Client) JoinGroup(ctx context.Context, id string) (*qimpb.GroupInfo, error) {
	res, err := c.group(ctx, &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_JOIN, GroupId: id})
	if err != nil {
		return nil, err
	}
	return res.GetGroup(), nil
}

// LeaveGroup leaves group id.
func (c *Client) LeaveGroup(ctx context.Context, id string) error {
	_, err := c.group(ctx, &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_LEAVE, GroupId: id})
	return err
}

// Invite adds user to group id.
func (c *Client) Invite(ctx context.Context, id, user string) error {
	_, err := c.group(ctx, &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_INVITE, GroupId: id, User: user})
	return err
}

// Kick removes user from group id and bans them; only the owner may.
func (c *Client) Kick(ctx context.Context, id, user string) error {
	_, err := c.group(ctx, &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_KICK, GroupId: id, User: user})
	return err
}

// Members returns the members of group id, sorted.
func (c *Client) Members(ctx context.Context, id string) ([]string, error) {
	res, err := c.group(ctx, &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_MEMBERS, GroupId: id})
	if err != nil {
		return nil, err
	}
	return res.GetMembers(), nil
}

// Groups returns the groups the caller is in, sorted by id.
func (c *Client) Groups(ctx context.Context) ([]*qimpb.GroupInfo, error) {
	res, err := c.group(ctx, &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_LIST})
	if err != nil {
		return nil, err
	}
	return res.GetGroups(), nil
}

// History returns the latest limit stored messages of group id with a seq
// below before (0: no bound), oldest first. limit 0 means the server's
// default (50); the server caps it at 500. To page backwards, pass the
// smallest seq of a page as the next before.
func (c *Client) History(ctx context.Context, id string, before uint64, limit int) ([]*qimpb.Message, error) {
	if limit < 0 || limit > math.MaxUint32 {
		return nil, fmt.Errorf("qim: history limit %d out of range", limit)
	}
	res, err := c.group(ctx, &qimpb.GroupRequest{
		Op:        qimpb.GroupOp_GROUP_HISTORY,
		GroupId:   id,
		Limit:     uint32(limit),
		BeforeSeq: before,
	})
	if err != nil {
		return nil, err
	}
	return res.GetMessages(), nil
}

// group sends a GROUP request on the general stream. Operations whose
// repetition is harmless are retried when their stream ends.
func (c *Client) group(ctx context.Context, gr *qimpb.GroupRequest) (*qimpb.GroupResult, error) {
	payload, err := proto.Marshal(gr)
	if err != nil {
		return nil, fmt.Errorf("qim: encode GroupRequest: %w", err)
	}
	retry := true
	switch gr.GetOp() {
	case qimpb.GroupOp_GROUP_CREATE, qimpb.GroupOp_GROUP_LEAVE, qimpb.GroupOp_GROUP_KICK:
		retry = false
	}
	resp, err := c.do(ctx, Peer{}, &qimpb.Request{Type: qimpb.RequestType_GROUP, Payload: payload}, retry)
	if err != nil {
		return nil, err
	}
	res := new(qimpb.GroupResult)
	if err := proto.Unmarshal(resp.GetPayload(), res); err != nil {
		return nil, fmt.Errorf("qim: decode GroupResult: %w", err)
	}
	return res, nil
}

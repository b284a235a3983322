package client

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"

	qimpb "github.com/qim-im/qim/proto"
)

// AddContact adds user to the caller's contacts. It is idempotent.
func (c *Client) AddContact(ctx context.Context, user string) error {
	_, err := c.contact(ctx, qimpb.ContactOp_CONTACT_ADD, user)
	return err
}

// RemoveContact removes user from the caller's contacts. It is idempotent.
func (c *Client) RemoveContact(ctx context.Context, user string) error {
	_, err := c.contact(ctx, qimpb.ContactOp_CONTACT_REMOVE, user)
	return err
}

// Contacts returns the caller's contacts, sorted.
func (c *Client) Contacts(ctx context.Context) ([]string, error) {
	res, err := c.contact(ctx, qimpb.ContactOp_CONTACT_LIST, "")
	if err != nil {
		return nil, err
	}
	return res.GetUsers(), nil
}

// contact sends a CONTACT request on the general stream. Every contact
// operation is idempotent, so it is retried when its stream ends.
func (c *Client) contact(ctx context.Context, op qimpb.ContactOp, user string) (*qimpb.ContactResult, error) {
	payload, err := proto.Marshal(&qimpb.ContactRequest{Op: op, User: user})
	if err != nil {
		return nil, fmt.Errorf("qim: encode ContactRequest: %w", err)
	}
	resp, err := c.do(ctx, Peer{}, &qimpb.Request{Type: qimpb.RequestType_CONTACT, Payload: payload}, true)
	if err != nil {
		return nil, err
	}
	res := new(qimpb.ContactResult)
	if err := proto.Unmarshal(resp.GetPayload(), res); err != nil {
		return nil, fmt.Errorf("qim: decode ContactResult: %w", err)
	}
	return res, nil
}

package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/qim-im/qim/client"
)

func (e *env) sendCommand() *cli.Command {
	return &cli.Command{
		Name:      "send",
		Usage:     "send one message",
		ArgsUsage: "TEXT...",
		Flags: append(peerCLIFlags(),
			&cli.StringFlag{Name: "image", Usage: "send an image: its http(s) `URL`, instead of TEXT"},
			&cli.BoolFlag{Name: "no-offline", Usage: "deliver only to devices online now; do not store"},
			&cli.StringFlag{Name: "id", Usage: "client message `ID`, to de-duplicate retries (default: random)"},
			&cli.BoolFlag{Name: "json", Usage: "print the acknowledgement as JSON"},
		),
		Action: e.send,
	}
}

// sendJSON is the --json form of a MessageAck.
type sendJSON struct {
	ID        uint64 `json:"id,string"`
	Seq       uint64 `json:"seq"`
	Timestamp int64  `json:"timestamp"`
	Duplicate bool   `json:"duplicate"`
}

func (e *env) send(cCtx *cli.Context) error {
	words, err := positional(cCtx)
	if err != nil {
		return err
	}
	to, err := peerFlags(cCtx)
	if err != nil {
		return err
	}
	text := strings.Join(words, " ")
	image := cCtx.String("image")
	switch {
	case image == "" && text == "":
		return errors.New("qim: send: nothing to send: give TEXT or --image URL")
	case image != "" && text != "":
		return errors.New("qim: send: a message is TEXT or an --image, not both")
	}
	c, err := e.dial(cCtx.Context, true)
	if err != nil {
		return err
	}
	defer c.Close()
	ack, err := c.Send(cCtx.Context, to, client.Outgoing{
		Text:        text,
		ImageURL:    image,
		ClientMsgID: cCtx.String("id"),
		NoOffline:   cCtx.Bool("no-offline"),
	})
	if err != nil {
		return err
	}
	if cCtx.Bool("json") {
		return printJSON(e.stdout, sendJSON{ack.GetId(), ack.GetSeq(), ack.GetTimestamp(), ack.GetDuplicate()})
	}
	dup := ""
	if ack.GetDuplicate() {
		dup = " duplicate"
	}
	_, err = fmt.Fprintf(e.stdout, "id=%d seq=%d%s\n", ack.GetId(), ack.GetSeq(), dup)
	return err
}

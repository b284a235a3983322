package main

import (
	"context"
	"errors"
	"fmt"
	"os"
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
			&cli.StringFlag{Name: "image-file", Usage: "upload the picture at `PATH` (PNG, JPEG, GIF, WebP) to the server, print its URL, and send it"},
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
	image, file := cCtx.String("image"), cCtx.String("image-file")
	given := 0
	for _, s := range []string{text, image, file} {
		if s != "" {
			given++
		}
	}
	switch {
	case given == 0:
		return errors.New("qim: send: nothing to send: give TEXT, --image URL or --image-file PATH")
	case given > 1:
		return errors.New("qim: send: a message is one of TEXT, --image and --image-file")
	}
	c, err := e.dial(cCtx.Context, true)
	if err != nil {
		return err
	}
	defer c.Close()
	if file != "" {
		if image, err = upload(cCtx.Context, c, to, file); err != nil {
			return err
		}
		if !cCtx.Bool("json") {
			fmt.Fprintf(e.stdout, "uploaded %s\n", image)
		}
	}
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

// upload uploads the picture at path for the conversation with to, and
// returns its URL.
func upload(ctx context.Context, c *client.Client, to client.Peer, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("qim: send: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("qim: send: %w", err)
	}
	info, err := c.Upload(ctx, to, f, fi.Size())
	if err != nil {
		return "", fmt.Errorf("qim: send: upload %s: %w", path, err)
	}
	return info.Url, nil
}

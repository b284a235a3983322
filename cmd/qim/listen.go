package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/qim-im/qim/client"
)

func (e *env) listenCommand() *cli.Command {
	return &cli.Command{
		Name:  "listen",
		Usage: "print messages as they arrive, one per line, and receipts, typing and presence",
		Description: "Each message is a line \"[CONV] FROM: TEXT (#SEQ)\". Events come between them:\n" +
			"   [@bob] alice: hi (#5) ✓ (delivered) and ✓✓ (read), on the user's messages listen printed,\n" +
			"   [@bob] read up to #5 on another device, [#g1] #5 delivered to 3 of 4, read by 1,\n" +
			"   [@bob] bob is typing… (then \"stopped typing\", unless a message from bob ends it),\n" +
			"   bob is online / away / offline, last seen 17:02.\n" +
			"With --json, each is an object: messages as before, events with an \"event\" field\n" +
			"(receipt, receipt_count, typing, presence). --count counts messages only.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print each message and event as a JSON object"},
			&cli.IntFlag{Name: "count", Usage: "exit after `N` messages"},
			&cli.DurationFlag{Name: "timeout", Usage: "stop listening after `D` (with --count: an error)"},
			localFlag(),
			noEventsFlag(),
		},
		Action: e.listen,
	}
}

func (e *env) listen(cCtx *cli.Context) error {
	count, timeout, asJSON := cCtx.Int("count"), cCtx.Duration("timeout"), cCtx.Bool("json")
	if count < 0 {
		return errors.New("qim: listen: --count must not be negative")
	}
	e.local = cCtx.String("local")
	e.noEvents = cCtx.Bool("no-events")
	c, err := e.dial(cCtx.Context, false)
	if err != nil {
		return err
	}
	defer c.Close()

	ctx := cCtx.Context
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	p := newPrinter(e.stdout, c.User(), asJSON, new(sentLog))
	p.seed(c.Connected().GetInbox().GetConversations())
	events := c.Events()
	tick := time.NewTicker(expireEvery)
	defer tick.Stop()
	for n := 0; count == 0 || n < count; {
		var expire <-chan time.Time
		if p.typingShown() {
			expire = tick.C
		}
		select {
		case m, ok := <-c.Messages():
			if !ok {
				return sessionEnded(c)
			}
			if err := p.message(m); err != nil {
				return err
			}
			n++
		case ev, ok := <-events:
			if !ok {
				events = nil // the session ended: Messages says so
				continue
			}
			if err := p.event(ev); err != nil {
				return err
			}
		case <-expire:
			if err := p.expire(); err != nil {
				return err
			}
		case <-ctx.Done():
			switch {
			case count == 0:
				return nil
			case cCtx.Context.Err() != nil:
				return fmt.Errorf("qim: listen: interrupted after %d of %d messages", n, count)
			default:
				return fmt.Errorf("qim: listen: timed out after %v with %d of %d messages", timeout, n, count)
			}
		}
	}
	return nil
}

// sessionEnded is the error of a session that ended without Close.
func sessionEnded(c *client.Client) error {
	<-c.Done()
	if err := c.Err(); err != nil {
		return err
	}
	return errors.New("qim: session ended")
}

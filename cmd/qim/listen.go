package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/qim-im/qim/client"
)

func (e *env) listenCommand() *cli.Command {
	return &cli.Command{
		Name:  "listen",
		Usage: "print messages as they arrive, one per line",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print each message as a JSON object"},
			&cli.IntFlag{Name: "count", Usage: "exit after `N` messages"},
			&cli.DurationFlag{Name: "timeout", Usage: "stop listening after `D` (with --count: an error)"},
			localFlag(),
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
	for n := 0; count == 0 || n < count; n++ {
		select {
		case m, ok := <-c.Messages():
			if !ok {
				return sessionEnded(c)
			}
			if err := printMessage(e.stdout, c.User(), m, asJSON); err != nil {
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

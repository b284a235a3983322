package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/qim-im/qim/client"
)

func (e *env) chatCommand() *cli.Command {
	return &cli.Command{
		Name: "chat",
		Usage: "send each line of standard input and print incoming messages; " +
			"/switch ADDR moves the connection to a new local address; ends at end of input or /quit",
		Flags:  append(peerCLIFlags(), localFlag()),
		Action: e.chat,
	}
}

func (e *env) chat(cCtx *cli.Context) error {
	to, err := peerFlags(cCtx)
	if err != nil {
		return err
	}
	ctx := cCtx.Context
	e.local = cCtx.String("local")
	c, err := e.dial(ctx, false)
	if err != nil {
		return err
	}

	// The printer owns stdout; send errors go to stderr. Close closes
	// Messages, which ends the printer.
	var printed sync.WaitGroup
	printed.Go(func() {
		for m := range c.Messages() {
			printMessage(e.stdout, c.User(), m, false)
		}
	})
	defer func() {
		c.Close()
		printed.Wait()
	}()

	lines := make(chan string)
	stop := make(chan struct{})
	defer close(stop)
	go readLines(e.stdin, lines, stop)

	for {
		select {
		case line, ok := <-lines:
			if !ok || strings.TrimSpace(line) == "/quit" {
				return nil
			}
			if strings.TrimSpace(line) == "" {
				continue
			}
			if addr, ok := strings.CutPrefix(strings.TrimSpace(line), "/switch "); ok {
				e.switchNetwork(ctx, c, strings.TrimSpace(addr))
				continue
			}
			if _, err := c.Send(ctx, to, client.Outgoing{Text: line}); err != nil {
				select {
				case <-c.Done():
					return sessionEnded(c)
				default:
				}
				if ctx.Err() != nil {
					return nil
				}
				fmt.Fprintf(e.stderr, "qim: not sent: %q: %v\n", line, err)
			}
		case <-c.Done():
			return sessionEnded(c)
		case <-ctx.Done():
			return nil
		}
	}
}

// readLines sends the lines of r on lines until r ends or stop is
// closed, then closes lines. It runs in its own goroutine; a read blocked on
// a terminal ends with the process.
func readLines(r io.Reader, lines chan<- string, stop <-chan struct{}) {
	defer close(lines)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		select {
		case lines <- strings.TrimSuffix(sc.Text(), "\r"):
		case <-stop:
			return
		}
	}
}

// switchNetwork moves the live connection to a new local address, as when
// a phone leaves Wi-Fi for cellular, and says how long it took.
func (e *env) switchNetwork(ctx context.Context, c *client.Client, addr string) {
	start := time.Now()
	mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.Migrate(mctx, addr); err != nil {
		fmt.Fprintf(e.stderr, "qim: switch to %s: %v\n", addr, err)
		return
	}
	fmt.Fprintf(e.stderr, "qim: switched to %s in %v; same session\n", addr, time.Since(start).Round(10*time.Microsecond))
}

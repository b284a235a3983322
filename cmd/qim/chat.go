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
		Usage: "send each line of standard input and print incoming messages, receipts, typing and presence; " +
			"/switch ADDR moves the connection to a new local address; ends at end of input or /quit",
		Description: "chat prints what listen prints, and a tick on each message it sent when it is\n" +
			"delivered (✓) and read (✓✓): \"[@bob] alice: hi (#5) ✓✓\". It tells the server that\n" +
			"the user read each message it shows (READ), and counts the receipts of each message\n" +
			"it sends to a group.\n\n" +
			"On a terminal, chat edits the line itself and tells the other side while the user\n" +
			"types (\"typing…\": again every 3 s while keys come, stopped when the line is sent\n" +
			"or after 5 s without a key). When standard input is not a terminal (a pipe, a\n" +
			"file), lines are sent as they come and no typing is sent.\n\n" +
			"With --no-events, or with a server older than receipts, chat sends and shows none\n" +
			"of this.",
		Flags:  append(peerCLIFlags(), localFlag(), noEventsFlag()),
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
	e.noEvents = cCtx.Bool("no-events")
	con := openConsole(e.stdin, e.stdout, e.stderr, to.String()+"> ")
	defer con.close()
	e.stdout, e.stderr = con.out, con.errOut
	c, err := e.dial(ctx, false)
	if err != nil {
		return err
	}

	// A server that knows receipts grants some of the features asked for.
	receipts := len(c.Connected().GetFeatures()) > 0
	sent := new(sentLog)
	p := newPrinter(e.stdout, c.User(), false, sent)
	p.seed(c.Connected().GetInbox().GetConversations())
	var rs *receiptSender
	var ty *typist
	stopWorkers := make(chan struct{})
	var workers sync.WaitGroup
	if receipts {
		rs = newReceiptSender(c, e.stderr)
		workers.Go(func() { rs.run(stopWorkers) })
		if con.raw() {
			ty = newTypist(func(active bool) {
				// Best effort: a refusal (RATE_LIMITED) only loses a hint.
				within(time.Now().Add(receiptTimeout), func(ctx context.Context) error { return c.Typing(ctx, to, active) })
			})
			workers.Go(func() { ty.run(stopWorkers) })
		}
	}

	// The printer owns stdout; send errors go to stderr. Close closes
	// Messages and Events, which ends the printer.
	var printed sync.WaitGroup
	printed.Go(func() { printChat(c, p, rs) })
	defer func() {
		close(stopWorkers) // the last READs, and "stopped typing"
		workers.Wait()
		c.Close()
		printed.Wait()
	}()

	stop := make(chan struct{})
	defer close(stop)
	var onKey func()
	if ty != nil {
		onKey = ty.key
	}
	con.start(onKey, stop)

	for {
		select {
		case line, ok := <-con.lines:
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
			if ty != nil {
				ty.lineSent()
			}
			ack, err := c.Send(ctx, to, client.Outgoing{Text: line})
			if err != nil {
				select {
				case <-c.Done():
					return sessionEnded(c)
				default:
				}
				if ctx.Err() != nil {
					return nil
				}
				fmt.Fprintf(e.stderr, "qim: not sent: %q: %v\n", line, err)
				continue
			}
			sent.add(to, ack.GetSeq(), line)
			if rs != nil && to.IsGroup() && ack.GetSeq() > 0 {
				rs.watch(to.Group, ack.GetSeq())
			}
		case <-c.Done():
			return sessionEnded(c)
		case <-ctx.Done():
			return nil
		}
	}
}

// printChat prints the messages and events of c until the session ends,
// and has rs, if not nil, mark each message it shows as read. It runs in
// its own goroutine, which owns chat's output.
func printChat(c *client.Client, p *printer, rs *receiptSender) {
	tick := time.NewTicker(expireEvery)
	defer tick.Stop()
	events := c.Events()
	for {
		var expire <-chan time.Time
		if p.typingShown() {
			expire = tick.C
		}
		select {
		case m, ok := <-c.Messages():
			if !ok {
				return
			}
			p.message(m)
			if rs != nil && m.GetSeq() > 0 && m.GetFromUser() != c.User() {
				rs.read(client.ConvOf(c.User(), m), m.GetSeq())
			}
		case ev, ok := <-events:
			if !ok {
				events = nil // the session ended: Messages says so
				continue
			}
			p.event(ev)
		case <-expire:
			p.expire()
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

// Command qim is the qim command-line client: it sends messages, listens,
// chats, and manages contacts and groups on a qim server.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), closeSignals()...)
	err := run(ctx, os.Args, os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, errorLine(err))
		os.Exit(1)
	}
}

// closeSignals are the signals that end a command cleanly (a listener or a
// chat closes its session with DISCONNECT): Ctrl-C, a kill, and SIGHUP,
// which a closed terminal sends.
func closeSignals() []os.Signal {
	return []os.Signal{os.Interrupt, syscall.SIGTERM, syscall.SIGHUP}
}

// run runs the command line args with the given standard streams.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	app := &cli.App{
		Name:  "qim",
		Usage: "talk to a qim server",
		Flags: globalFlags(),
		Before: func(cCtx *cli.Context) error {
			e.g = readGlobals(cCtx)
			return nil
		},
		Commands: []*cli.Command{
			e.sendCommand(),
			e.listenCommand(),
			e.chatCommand(),
			e.contactsCommand(),
			e.groupCommand(),
			e.benchCommand(),
		},
		Reader:          stdin,
		Writer:          stdout,
		ErrWriter:       stderr,
		HideHelpCommand: true,
		// Errors are returned to main, which prints them; never os.Exit here.
		ExitErrHandler: func(*cli.Context, error) {},
	}
	return app.RunContext(ctx, args)
}

// errorLine is the one line main prints for err.
func errorLine(err error) string {
	msg, _, _ := strings.Cut(err.Error(), "\n")
	if !strings.HasPrefix(msg, "qim: ") {
		msg = "qim: " + msg
	}
	return msg
}

// env is what the commands share: the standard streams and the global
// flags, read by the app's Before hook.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	g              globals
	local          string // --local of listen and chat: the client socket's address
	noEvents       bool   // --no-events of listen and chat
	stopProfile    func() // ends qim bench --cpuprofile; nil without
}

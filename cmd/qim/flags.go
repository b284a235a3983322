package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/qim-im/qim/certs"
	"github.com/qim-im/qim/client"
)

// globals holds the global flags.
type globals struct {
	server, ca     string
	insecure       bool
	org, appkey    string
	user, token    string
	device         string
	connectTimeout time.Duration
}

// globalFlags returns the flags shared by every command. Each can be set by
// the environment variable QIM_<NAME>.
func globalFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "server", Value: "127.0.0.1:4433", Usage: "server `HOST:PORT`, or the nodes of a cluster as HOST:PORT,HOST:PORT,...: " +
			"tried in order until one answers; listen and chat move to the next when theirs goes away", EnvVars: envVars("server")},
		&cli.StringFlag{Name: "ca", Value: "data/certs/ca.pem", Usage: "PEM `FILE` of the CA that signed the server's certificate", EnvVars: envVars("ca")},
		&cli.BoolFlag{Name: "insecure", Usage: "do not verify the server's certificate (development only)", EnvVars: envVars("insecure")},
		&cli.StringFlag{Name: "org", Value: "demo", Usage: "organisation `ID` of the application", EnvVars: envVars("org")},
		&cli.StringFlag{Name: "appkey", Value: "demo", Usage: "application `KEY`", EnvVars: envVars("appkey")},
		&cli.StringFlag{Name: "user", Usage: "user `ID` (required)", EnvVars: envVars("user")},
		&cli.StringFlag{Name: "token", Usage: "access `TOKEN` of the user (required)", EnvVars: envVars("token")},
		&cli.StringFlag{Name: "device", Usage: "device `ID` (default: \"cli\" for listen and chat, a random \"cli-XXXXXXXX\" otherwise)", EnvVars: envVars("device")},
		&cli.DurationFlag{Name: "timeout", Value: 10 * time.Second, Usage: "time allowed for connecting", EnvVars: envVars("timeout")},
	}
}

func envVars(name string) []string {
	return []string{"QIM_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))}
}

// readGlobals reads the global flags from the app's context.
func readGlobals(cCtx *cli.Context) globals {
	return globals{
		server:         cCtx.String("server"),
		ca:             cCtx.String("ca"),
		insecure:       cCtx.Bool("insecure"),
		org:            cCtx.String("org"),
		appkey:         cCtx.String("appkey"),
		user:           cCtx.String("user"),
		token:          cCtx.String("token"),
		device:         cCtx.String("device"),
		connectTimeout: cCtx.Duration("timeout"),
	}
}

// dial connects as the user of the global flags. A one-shot session (send,
// contacts, group) is send-only and, unless --device is given, uses a random
// device, so that it never replaces a listening session of the same user;
// an interactive one (listen, chat) uses device "cli" by default.
func (e *env) dial(ctx context.Context, oneShot bool) (*client.Client, error) {
	g := e.g
	switch {
	case g.user == "":
		return nil, errors.New("qim: --user (or QIM_USER) is required")
	case g.token == "":
		return nil, errors.New("qim: --token (or QIM_TOKEN) is required")
	}
	addrs, err := serverAddrs(g.server)
	if err != nil {
		return nil, err
	}
	host, _, _ := net.SplitHostPort(addrs[0])
	if g.insecure {
		fmt.Fprintln(e.stderr, "qim: warning: --insecure: the server's certificate is not verified")
	}
	tlsConf, err := certs.ClientTLS(g.ca, g.insecure, host)
	if err != nil {
		return nil, err
	}
	device := g.device
	if device == "" {
		device = "cli"
		if oneShot {
			device = "cli-" + randomHex(4)
		}
	}
	cfg := client.Config{
		Addr:      addrs[0],
		Addrs:     addrs[1:],
		TLSConfig: tlsConf,
		Org:       g.org,
		Appkey:    g.appkey,
		User:      g.user,
		Token:     g.token,
		Device:    device,
		SendOnly:  oneShot,
		LocalAddr: e.local,
		NoEvents:  e.noEvents,
		// Interactive sessions resume by themselves after an outage.
		Reconnect: !oneShot,
		// Unbuffered: a message is acknowledged only once printed, so that
		// listen --count never acknowledges a message it does not show.
		Inbox: -1,
	}
	if !oneShot {
		cfg.OnFailover = func(from, to string) {
			fmt.Fprintf(e.stderr, "qim: failed over from %s to %s\n", from, to)
		}
	}
	dctx, cancel := context.WithTimeout(ctx, g.connectTimeout)
	defer cancel()
	c, err := client.Dial(dctx, cfg)
	if err != nil && dctx.Err() != nil && ctx.Err() == nil {
		return nil, fmt.Errorf("qim: connect to %s: no answer within %v", g.server, g.connectTimeout)
	}
	return c, err
}

// serverAddrs splits --server into the addresses of the nodes it names,
// each a HOST:PORT.
func serverAddrs(server string) ([]string, error) {
	addrs := strings.Split(server, ",")
	for i, a := range addrs {
		addrs[i] = strings.TrimSpace(a)
		if _, _, err := net.SplitHostPort(addrs[i]); err != nil {
			return nil, fmt.Errorf("qim: --server %q: %w", server, err)
		}
	}
	return addrs, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails
	return hex.EncodeToString(b)
}

// peerFlags returns the conversation named by --to or --group.
func peerFlags(cCtx *cli.Context) (client.Peer, error) {
	to, group := cCtx.String("to"), cCtx.String("group")
	if (to == "") == (group == "") {
		return client.Peer{}, errors.New("qim: give exactly one of --to USER and --group GID")
	}
	if group != "" {
		return client.ToGroup(group), nil
	}
	return client.ToUser(to), nil
}

// peerCLIFlags are the --to and --group flags of send and chat.
func peerCLIFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "to", Usage: "send to `USER`"},
		&cli.StringFlag{Name: "group", Usage: "send to group `GID`"},
	}
}

// args checks that the command has exactly the positional arguments named
// in usage and returns them.
func args(cCtx *cli.Context, usage ...string) ([]string, error) {
	a, err := positional(cCtx)
	if err != nil {
		return nil, err
	}
	if len(a) != len(usage) {
		return nil, fmt.Errorf("qim: usage: %s %s", cCtx.Command.HelpName, strings.Join(usage, " "))
	}
	return a, nil
}

// positional returns the positional arguments of the command, applying
// the flags that follow them, as in "group history GID --limit 10": the
// flag package stops at the first positional argument. Everything after
// "--" is positional.
func positional(cCtx *cli.Context) ([]string, error) {
	rest := cCtx.Args().Slice()
	if len(rest) > 0 && len(rest[0]) > 1 && rest[0][0] == '-' {
		// The flag package stopped at "--", which it consumed.
		return rest, nil
	}
	var pos []string
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		if a == "--" {
			return append(pos, rest[i+1:]...), nil
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		f := lookupFlag(cCtx.Command.Flags, name)
		if f == nil {
			return nil, fmt.Errorf("qim: flag provided but not defined: %s", a)
		}
		if _, isBool := f.(*cli.BoolFlag); isBool && !hasValue {
			value, hasValue = "true", true
		}
		if !hasValue {
			if i+1 == len(rest) {
				return nil, fmt.Errorf("qim: flag needs an argument: %s", a)
			}
			i++
			value = rest[i]
		}
		if err := cCtx.Set(name, value); err != nil {
			return nil, fmt.Errorf("qim: %s: %w", a, err)
		}
	}
	return pos, nil
}

func lookupFlag(flags []cli.Flag, name string) cli.Flag {
	for _, f := range flags {
		if slices.Contains(f.Names(), name) {
			return f
		}
	}
	return nil
}

// withClient runs f with a one-shot session, closed when f returns.
func (e *env) withClient(cCtx *cli.Context, f func(ctx context.Context, c *client.Client) error) error {
	c, err := e.dial(cCtx.Context, true)
	if err != nil {
		return err
	}
	defer c.Close()
	return f(cCtx.Context, c)
}

func jsonFlag() cli.Flag {
	return &cli.BoolFlag{Name: "json", Usage: "print JSON"}
}

// localFlag is the --local flag of listen and chat.
func localFlag() cli.Flag {
	return &cli.StringFlag{Name: "local", Usage: "bind the client socket to `ADDR` (ip or ip:port), e.g. to pick a network", EnvVars: envVars("local")}
}

// noEventsFlag is the --no-events flag of listen and chat.
func noEventsFlag() cli.Flag {
	return &cli.BoolFlag{Name: "no-events", Usage: "ask the server for no receipts, typing or presence; chat then sends none either"}
}

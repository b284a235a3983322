package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/qim-im/qim/client"
)

func (e *env) groupCommand() *cli.Command {
	// simple is a subcommand that takes GID and maybe USER and prints nothing.
	simple := func(name, usage string, argsUsage []string, f func(ctx context.Context, c *client.Client, a []string) error) *cli.Command {
		return &cli.Command{
			Name:      name,
			Usage:     usage,
			ArgsUsage: strings.Join(argsUsage, " "),
			Action: func(cCtx *cli.Context) error {
				a, err := args(cCtx, argsUsage...)
				if err != nil {
					return err
				}
				return e.withClient(cCtx, func(ctx context.Context, c *client.Client) error {
					return f(ctx, c, a)
				})
			},
		}
	}
	return &cli.Command{
		Name:  "group",
		Usage: "manage groups and read their history",
		Subcommands: []*cli.Command{
			{
				Name:      "create",
				Usage:     "create a group owned by the user; prints its id",
				ArgsUsage: "NAME...",
				Action:    e.groupCreate,
			},
			simple("invite", "add a user to a group", []string{"GID", "USER"},
				func(ctx context.Context, c *client.Client, a []string) error { return c.Invite(ctx, a[0], a[1]) }),
			simple("join", "join a group", []string{"GID"},
				func(ctx context.Context, c *client.Client, a []string) error {
					_, err := c.JoinGroup(ctx, a[0])
					return err
				}),
			simple("leave", "leave a group", []string{"GID"},
				func(ctx context.Context, c *client.Client, a []string) error { return c.LeaveGroup(ctx, a[0]) }),
			simple("kick", "remove a user from a group and ban them (owner only)", []string{"GID", "USER"},
				func(ctx context.Context, c *client.Client, a []string) error { return c.Kick(ctx, a[0], a[1]) }),
			{
				Name:      "members",
				Usage:     "list the members of a group, sorted",
				ArgsUsage: "GID",
				Flags:     []cli.Flag{jsonFlag()},
				Action:    e.groupMembers,
			},
			{
				Name:   "list",
				Usage:  "list the user's groups: id, name and owner",
				Flags:  []cli.Flag{jsonFlag()},
				Action: e.groupList,
			},
			{
				Name:      "history",
				Usage:     "print a group's latest stored messages, oldest first",
				ArgsUsage: "GID",
				Flags: []cli.Flag{
					&cli.IntFlag{Name: "limit", Usage: "at most `N` messages (default 50, at most 500)"},
					&cli.Uint64Flag{Name: "before", Usage: "only messages with a seq below `SEQ`"},
					&cli.BoolFlag{Name: "json", Usage: "print each message as a JSON object"},
				},
				Action: e.groupHistory,
			},
		},
	}
}

func (e *env) groupCreate(cCtx *cli.Context) error {
	words, err := positional(cCtx)
	if err != nil {
		return err
	}
	name := strings.Join(words, " ")
	if name == "" {
		return fmt.Errorf("qim: usage: %s NAME", cCtx.Command.HelpName)
	}
	return e.withClient(cCtx, func(ctx context.Context, c *client.Client) error {
		g, err := c.CreateGroup(ctx, name)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(e.stdout, g.GetId())
		return err
	})
}

func (e *env) groupMembers(cCtx *cli.Context) error {
	a, err := args(cCtx, "GID")
	if err != nil {
		return err
	}
	return e.withClient(cCtx, func(ctx context.Context, c *client.Client) error {
		members, err := c.Members(ctx, a[0])
		if err != nil {
			return err
		}
		return printList(e.stdout, members, cCtx.Bool("json"))
	})
}

func (e *env) groupList(cCtx *cli.Context) error {
	if _, err := args(cCtx); err != nil {
		return err
	}
	return e.withClient(cCtx, func(ctx context.Context, c *client.Client) error {
		groups, err := c.Groups(ctx)
		if err != nil {
			return err
		}
		return printGroups(e.stdout, groups, cCtx.Bool("json"))
	})
}

func (e *env) groupHistory(cCtx *cli.Context) error {
	a, err := args(cCtx, "GID")
	if err != nil {
		return err
	}
	return e.withClient(cCtx, func(ctx context.Context, c *client.Client) error {
		msgs, err := c.History(ctx, a[0], cCtx.Uint64("before"), cCtx.Int("limit"))
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if err := printMessage(e.stdout, c.User(), m, cCtx.Bool("json")); err != nil {
				return err
			}
		}
		return nil
	})
}

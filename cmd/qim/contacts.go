package main

import (
	"context"

	"github.com/urfave/cli/v2"

	"github.com/qim-im/qim/client"
)

func (e *env) contactsCommand() *cli.Command {
	return &cli.Command{
		Name:  "contacts",
		Usage: "manage the user's contacts",
		Subcommands: []*cli.Command{
			{
				Name:      "add",
				Usage:     "add a contact",
				ArgsUsage: "USER",
				Action: func(cCtx *cli.Context) error {
					a, err := args(cCtx, "USER")
					if err != nil {
						return err
					}
					return e.withClient(cCtx, func(ctx context.Context, c *client.Client) error { return c.AddContact(ctx, a[0]) })
				},
			},
			{
				Name:      "remove",
				Usage:     "remove a contact",
				ArgsUsage: "USER",
				Action: func(cCtx *cli.Context) error {
					a, err := args(cCtx, "USER")
					if err != nil {
						return err
					}
					return e.withClient(cCtx, func(ctx context.Context, c *client.Client) error { return c.RemoveContact(ctx, a[0]) })
				},
			},
			{
				Name:  "list",
				Usage: "list the contacts, sorted",
				Flags: []cli.Flag{jsonFlag()},
				Action: func(cCtx *cli.Context) error {
					if _, err := args(cCtx); err != nil {
						return err
					}
					return e.withClient(cCtx, func(ctx context.Context, c *client.Client) error {
						users, err := c.Contacts(ctx)
						if err != nil {
							return err
						}
						return printList(e.stdout, users, cCtx.Bool("json"))
					})
				},
			},
		},
	}
}

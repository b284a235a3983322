package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/qim-im/qim/client"
	qimpb "github.com/qim-im/qim/proto"
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
				Name: "list",
				Usage: "list the contacts, sorted, with their presence: online, away, offline (and when last seen), " +
					"or (hidden) when they have not added the user to their own contacts",
				Flags: []cli.Flag{jsonFlag()},
				Action: func(cCtx *cli.Context) error {
					if _, err := args(cCtx); err != nil {
						return err
					}
					return e.withClient(cCtx, func(ctx context.Context, c *client.Client) error {
						users, shown, err := c.ContactsPresence(ctx)
						if err != nil {
							return err
						}
						return printContacts(e.stdout, users, shown, time.Now(), cCtx.Bool("json"))
					})
				},
			},
		},
	}
}

// contactJSON is the --json form of a contact. State is "online", "away",
// "offline", or "hidden" when the contact does not show it to the user;
// LastSeen and Since are Unix milliseconds, 0 when unknown or hidden.
type contactJSON struct {
	User     string `json:"user"`
	State    string `json:"state"`
	LastSeen int64  `json:"last_seen"`
	Since    int64  `json:"since"`
}

// printContacts prints one contact per line, "USER  PRESENCE" with the
// names aligned, or a JSON array.
func printContacts(w io.Writer, users []string, shown map[string]*qimpb.Presence, now time.Time, asJSON bool) error {
	if asJSON {
		out := make([]contactJSON, 0, len(users))
		for _, u := range users {
			cj := contactJSON{User: u, State: "hidden"}
			if p := shown[u]; p != nil {
				cj.State, cj.LastSeen, cj.Since = stateName(p.GetState()), p.GetLastSeen(), p.GetSince()
			}
			out = append(out, cj)
		}
		return printJSON(w, out)
	}
	width := 0
	for _, u := range users {
		width = max(width, len(u))
	}
	for _, u := range users {
		status := "(hidden)"
		if p := shown[u]; p != nil {
			status = presenceText(p, now, true)
		}
		if _, err := fmt.Fprintf(w, "%-*s  %s\n", width, u, status); err != nil {
			return err
		}
	}
	return nil
}

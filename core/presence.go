package core

import (
	"context"
	"hash/maphash"
	"slices"

	"github.com/qim-im/qim/presence"
	qimpb "github.com/qim-im/qim/proto"
)

// presenceWorkers is how many goroutines fan presence changes out to
// contacts; a user's changes always go through the same one, in order.
const presenceWorkers = 4

// presenceQueue is how many changes wait for each worker; a tracker that
// publishes faster waits (its timers run late, nothing is lost).
const presenceQueue = 1024

// NoPresence is a presence.Conn that counts for nothing (a send-only
// connection).
var NoPresence presence.Conn = noPresence{}

type noPresence struct{}

func (noPresence) SetAway(bool) {}
func (noPresence) Leave()       {}

// presenceFanout hands the tracker's changes to the workers that tell
// the contacts.
type presenceFanout struct {
	seed    maphash.Seed
	changes [presenceWorkers]chan presence.Change
}

// startPresence starts the presence tracker (Config.NewPresence, or a
// presence.Local) and the workers that fan its changes out.
func (h *Hub) startPresence(cfg Config) {
	f := &presenceFanout{seed: maphash.MakeSeed()}
	for i := range f.changes {
		ch := make(chan presence.Change, presenceQueue)
		f.changes[i] = ch
		h.wg.Go(func() {
			for {
				select {
				case <-h.stop:
					return
				case c := <-ch:
					h.fanOutPresence(c)
				}
			}
		})
	}
	publish := func(c presence.Change) {
		ch := f.changes[maphash.String(f.seed, c.App+"\x00"+c.Presence.User)%presenceWorkers]
		select {
		case ch <- c:
		case <-h.stop:
		}
	}
	if cfg.NewPresence != nil {
		h.presence = cfg.NewPresence(publish)
	} else {
		h.presence = presence.NewLocal(presence.Config{Grace: cfg.PresenceGrace, Coalesce: cfg.PresenceCoalesce, Publish: publish})
	}
}

// fanOutPresence tells c to the users who see it: those in the user's
// contacts who have the user in theirs and, with Config.PresenceGroups, the members of its groups
// (docs/PROTOCOL.md section 11.6).
func (h *Hub) fanOutPresence(c presence.Change) {
	// Those in the user's contacts who follow it (have it in theirs): a
	// user gets the presence of its contacts who show it theirs, no more,
	// so that a snapshot (PresenceSnapshot) and the changes agree.
	users, err := h.store.Contacts(h.ctx, c.App, c.Presence.User)
	if err == nil && len(users) > 0 {
		users, err = h.store.ContactOf(h.ctx, c.App, c.Presence.User, users)
	}
	if err == nil && h.presenceGroups {
		var mates []string
		if mates, err = h.groupMates(h.ctx, c.App, c.Presence.User); err == nil {
			users = union(users, mates)
		}
	}
	if err != nil {
		if h.ctx.Err() == nil {
			h.logger.Warn("presence: who sees it", "user", c.Presence.User, "err", err)
		}
		return
	}
	if len(users) > 0 {
		h.router.Deliver(c.App, users, Event{Note: &qimpb.Event{Presence: c.Presence}})
	}
}

// maxPresenceGroup is the largest group whose members see each other's
// presence with Config.PresenceGroups.
const maxPresenceGroup = 500

// groupMates returns the members, other than user, of user's groups of
// at most maxPresenceGroup members, sorted.
func (h *Hub) groupMates(ctx context.Context, app, user string) ([]string, error) {
	gs, err := h.store.UserGroups(ctx, app, user)
	if err != nil {
		return nil, StoreError("user groups", err)
	}
	var mates []string
	for _, info := range gs {
		g, err := h.group(ctx, app, info.ID)
		if err != nil {
			continue // closed or gone since
		}
		if len(g.members) <= maxPresenceGroup {
			mates = union(mates, g.members)
		}
	}
	if i, ok := slices.BinarySearch(mates, user); ok {
		mates = slices.Delete(mates, i, i+1)
	}
	return mates, nil
}

// union returns the sorted union of a and b, without duplicates.
func union(a, b []string) []string {
	out := append(slices.Clone(a), b...)
	slices.Sort(out)
	return slices.Compact(out)
}

// JoinPresence counts a new connection of user's device in the user's
// presence, ONLINE.
func (h *Hub) JoinPresence(app, user, device string) presence.Conn {
	return h.presence.Join(app, user, device, false)
}

// Presence returns user's presence as its contacts see it.
func (h *Hub) Presence(app, user string) *qimpb.Presence {
	return h.presence.Get(app, []string{user})[0]
}

// PresenceSnapshot returns the presence of the users whose presence user
// sees (docs/PROTOCOL.md section 11.6): those of its contacts who have
// user in their contacts and, with Config.PresenceGroups, the members of
// its groups.
func (h *Hub) PresenceSnapshot(ctx context.Context, app, user string) ([]*qimpb.Presence, error) {
	contacts, err := h.store.Contacts(ctx, app, user)
	if err != nil {
		return nil, StoreError("contacts", err)
	}
	return h.presenceOf(ctx, app, user, contacts, true)
}

// presenceOf returns the presence of those of users, user's contacts,
// who show it to user (have user in their contacts, or, with
// Config.PresenceGroups, share a group with user), and with allMates of
// every group mate of user too, listed in users or not.
func (h *Hub) presenceOf(ctx context.Context, app, user string, users []string, allMates bool) ([]*qimpb.Presence, error) {
	var shown []string
	if len(users) > 0 {
		var err error
		if shown, err = h.store.ContactOf(ctx, app, user, users); err != nil {
			return nil, StoreError("contacts of", err)
		}
	}
	if h.presenceGroups {
		mates, err := h.groupMates(ctx, app, user)
		if err != nil {
			return nil, err
		}
		if !allMates {
			mates = slices.DeleteFunc(mates, func(u string) bool { return !slices.Contains(users, u) })
		}
		shown = union(shown, mates)
	}
	if len(shown) == 0 {
		return nil, nil
	}
	return h.presence.Get(app, shown), nil
}

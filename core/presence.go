package core

import (
	"context"
	"hash/maphash"

	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/presence"
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
// contacts (docs/PROTOCOL.md section 11.6).
func (h *Hub) fanOutPresence(c presence.Change) {
	users, err := h.store.Contacts(h.ctx, c.App, c.Presence.User)
	if err != nil {
		if h.ctx.Err() == nil {
			h.logger.Warn("presence: read contacts", "user", c.Presence.User, "err", err)
		}
		return
	}
	if len(users) > 0 {
		h.router.Deliver(c.App, users, Event{Note: &qimpb.Event{Presence: c.Presence}})
	}
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

// PresenceSnapshot returns the presence of those of user's contacts who
// show it to user (have user in their contacts).
func (h *Hub) PresenceSnapshot(ctx context.Context, app, user string) ([]*qimpb.Presence, error) {
	contacts, err := h.store.Contacts(ctx, app, user)
	if err != nil {
		return nil, StoreError("contacts", err)
	}
	return h.visiblePresence(ctx, app, user, contacts)
}

// visiblePresence returns the presence of those of users who show it to
// user.
func (h *Hub) visiblePresence(ctx context.Context, app, user string, users []string) ([]*qimpb.Presence, error) {
	if len(users) == 0 {
		return nil, nil
	}
	shown, err := h.store.ContactOf(ctx, app, user, users)
	if err != nil {
		return nil, StoreError("contacts of", err)
	}
	if len(shown) == 0 {
		return nil, nil
	}
	return h.presence.Get(app, shown), nil
}

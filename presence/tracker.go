package presence

import (
	"time"

	qimpb "github.com/qim-im/qim/proto"
)

// Tracker follows the connections of users and decides when their presence
// changes. Its methods are safe for concurrent use.
type Tracker interface {
	// Join records a new connection of user's device in app, ONLINE, or
	// AWAY if away is set, and returns its handle. It is cheap and never
	// blocks on I/O.
	Join(app, user, device string, away bool) Conn
	// Get returns the current published presence of each of users in app,
	// in the order of users: OFFLINE with last_seen 0 for a user the
	// tracker does not know.
	Get(app string, users []string) []*qimpb.Presence
	// Close stops the tracker's timers and waits for the publishing in
	// progress: Publish is not called after Close returns. It must not be
	// called from Publish.
	Close()
}

// Conn is one connection of a user, as returned by Tracker.Join. Its methods
// are safe for concurrent use and do nothing after Leave.
type Conn interface {
	// SetAway marks the connection as in the background (away) or in the
	// foreground.
	SetAway(away bool)
	// Leave records the end of the connection. Calling it again does
	// nothing.
	Leave()
}

// Change is a user's new presence, published once decided.
type Change struct {
	App      string
	Presence *qimpb.Presence // user, state, last_seen and since (Unix ms)
}

// Config configures a tracker. The zero value of each field is a usable
// default.
type Config struct {
	// Grace is how long a user whose last connection left keeps its state
	// (online or away) before going offline. Zero means 5 s.
	Grace time.Duration
	// Coalesce is the window of coalescing: a user's presence is published
	// at most once per window, with its latest state, and not at all if it
	// reverts within the window. Zero means 1 s.
	Coalesce time.Duration
	// Publish is called with each change, without the tracker's locks
	// held, from a goroutine of the tracker, in order for each user (never
	// an older change of a user after a newer one). It must not block for
	// long: it holds up the next changes of other users too. Nil publishes
	// nothing (Get still answers).
	Publish func(Change)
	// MaxUsers bounds the number of offline users whose last_seen is
	// remembered; beyond it, the least recently changed are forgotten.
	// Users online, away or with a change pending are always kept. Zero
	// means 1,000,000: about 200 MB with short names (some 200 bytes a
	// user plus its app and user names: see TestMemoryPerUser).
	MaxUsers int
}

// Default values of Config fields.
const (
	DefaultGrace    = 5 * time.Second
	DefaultCoalesce = time.Second
	DefaultMaxUsers = 1_000_000
)

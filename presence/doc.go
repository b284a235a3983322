// Package presence decides when a user's presence changes: online, away or
// offline, with when the user was last seen (docs/PROTOCOL.md, section 11.6).
//
// # Model
//
// A user's state is derived from the user's live connections, across all
// devices: ONLINE if any connection is in the foreground, AWAY if every one
// is in the background, OFFLINE when none is left. Two rules keep it from
// flapping:
//
//   - Grace. When the last connection leaves, the user keeps the state it
//     had for a grace period (5 s by default). A connection that joins within
//     it (a reconnect, a 0-RTT resume) continues that state as if the user
//     had never left, and nothing is published.
//   - Coalescing. When the state departs from the one last published, a
//     window opens (1 s by default); if the state comes back within it, the
//     window closes and nothing is published; otherwise the state at the
//     end of the window is published. So a user gets at most one change per
//     window, carrying the latest state, and flapping faster than the
//     window publishes nothing until it stops.
//
// So a user is shown online a window after joining, and offline a grace
// period plus a window after the last connection left. Each published
// presence carries last_seen (for OFFLINE: when the last connection left;
// otherwise when the presence was produced) and since (when the state began,
// strictly increasing per user: a device keeps the presence with the latest
// since).
//
// Fan-out is not done here: the tracker calls Config.Publish with each
// change, in order for each user, and the caller sends it to the user's
// contacts.
//
// # Soft state, behind an interface
//
// Local keeps everything in this node's memory and forgets it on restart
// (users are then offline with last_seen 0 until they connect): presence is
// soft state, never stored. Offline users' last_seen is remembered for a
// bounded number of users (Config.MaxUsers), the least recently changed
// forgotten first; online users are always kept. Callers use the Tracker
// interface, so that a cluster-wide tracker, which merges the connections a
// user holds on several nodes, can replace Local without changing them.
package presence

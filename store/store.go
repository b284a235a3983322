// Package store defines the durable storage qim needs, behind one narrow
// interface, and the errors every backend returns.
//
// The default backend is store/pebblestore (an embedded Pebble database in one
// data directory). Every backend must pass the conformance suite in
// store/storetest; store/pgstore is the PostgreSQL backend of multi-node
// deployments. Nothing in this interface assumes a single process except where
// a method's comment says so.
package store

import (
	"context"
	"errors"
	"time"

	qimpb "github.com/qim-im/qim/proto"
)

// Errors returned by every backend. Callers compare with errors.Is.
var (
	ErrNotFound = errors.New("store: not found")
	ErrExists   = errors.New("store: already exists")
	ErrClosed   = errors.New("store: closed")

	// Refusals of the group write methods: the rule was checked and applied
	// in the same atomic step as the write it guards.
	ErrBanned    = errors.New("store: banned from the group")
	ErrFull      = errors.New("store: group is full")
	ErrNotMember = errors.New("store: not a member of the group")
	ErrNotOwner  = errors.New("store: not the owner of the group")
)

// AppID returns the tenant key of org and appkey. Org and appkey are validated
// by the caller never to contain '/'.
func AppID(org, appkey string) string { return org + "/" + appkey }

// Append is one message to store, as given to Store.Append.
//
// Msg must have From, one of ToUser or ToGroup, Type and Payload set. Conv is
// the conversation key the message belongs to (DirectConv or GroupConv). Members
// are the users whose inbox the conversation must be in (both users of a 1:1
// conversation; empty for a group, whose members are already linked). The
// backend assigns Msg.Id, Msg.Seq and Msg.Timestamp unless the message is a
// duplicate.
type Append struct {
	App     string
	Conv    string
	Members []string
	Msg     *qimpb.Message
	// PushAt, when not zero, also adds a job for the stored message to the
	// offline-push outbox, in the same atomic, durable write, due at
	// PushAt (see PushJob). A duplicate adds no job.
	PushAt time.Time
}

// PushJob is one entry of the offline-push outbox: a stored message whose
// recipients may have to be woken through the application's push gateway
// (package push). The outbox is a durable queue: a job stays until
// FinishPush removes it, however often it is claimed. There is one outbox
// per store, holding the jobs of every app.
type PushJob struct {
	ID   uint64 // assigned by the store, unique, increasing with each Append
	App  string
	Conv string
	Seq  uint64
	// Users are the users still to be notified. Nil means not worked out
	// yet (a job as Append added it); RetryPush stores a non-nil list.
	Users    []string
	Attempts int       // how many times RetryPush rescheduled the job
	Next     time.Time // when the job is due; stored with millisecond precision
}

// AppendResult is the outcome of one Append.
type AppendResult struct {
	// Msg is the stored message: the one given, with Id, Seq and Timestamp
	// filled in, or, when Duplicate, the message first stored under the same
	// (App, Msg.FromUser, Msg.ClientMsgId).
	Msg       *qimpb.Message
	Duplicate bool
}

// ConvState is a conversation in a device's inbox: its latest sequence number
// and how far that device has acknowledged, and the read receipts of it.
type ConvState struct {
	Conv    string
	LastSeq uint64
	Acked   uint64
	// Read is the user's read cursor: the furthest of what SetRead
	// recorded, the user's own latest message in the conversation
	// (Append), and, for a group, the user's join point (what came before
	// the join is not unread).
	Read uint64
	// For a 1:1 conversation, the other user's receipts (see Receipt):
	// PeerDelivered is the furthest any of its devices acknowledged,
	// PeerRead its shared read cursor. Both 0 for a group, and for a
	// conversation with oneself.
	PeerDelivered uint64
	PeerRead      uint64
}

// Receipt is how far one user got in one conversation.
type Receipt struct {
	User string
	// Delivered is the furthest seq any device of User acknowledged
	// (SetAcked), 0 if none did: a group's join point does not count.
	Delivered uint64
	// Read is User's shared read cursor: SetRead with share.
	Read uint64
}

// Prefs are a user's settings, as SetPrefs stored them. The zero value
// is what a user who never stored any has.
type Prefs struct {
	// HideReadReceipts: the user's reads do not move its shared read
	// cursor (the server stops SetRead's share).
	HideReadReceipts bool
}

// Group is a group's stored description.
type Group struct {
	ID      string
	Name    string
	Owner   string
	Created int64 // Unix milliseconds
	LastSeq uint64
}

// Store is the durable state of a qim server. All methods are safe for
// concurrent use. Every write method returns only after the write is durable
// (synced to stable storage), except SetAcked, which may be lost in a power
// failure (a device then sees messages again, and drops them by seq).
type Store interface {
	// Append stores messages, in order, durably, in one commit. For each
	// conversation, messages get the next sequence numbers in slice order.
	// A message whose (App, FromUser, ClientMsgId) was stored before, or
	// appears earlier in the same call, is not stored again: its result is the
	// original, with Duplicate set. An empty ClientMsgId is never a duplicate.
	// On error the messages may or may not have been stored (a sync can fail
	// after the write reached the disk): a retry with the same ClientMsgIds is
	// safe, and sequence numbers stay dense either way. Ids are unique and
	// increase with each call.
	Append(ctx context.Context, msgs []Append) ([]AppendResult, error)

	// Messages returns up to limit stored messages of a conversation with
	// after < seq, oldest first.
	Messages(ctx context.Context, app, conv string, after uint64, limit int) ([]*qimpb.Message, error)
	// History returns up to limit stored messages of a conversation with
	// seq < before (0 means no bound), newest last: the latest page before
	// the bound, in ascending order.
	History(ctx context.Context, app, conv string, before uint64, limit int) ([]*qimpb.Message, error)
	// LastSeq returns the sequence number of a conversation's latest message,
	// 0 if it has none.
	LastSeq(ctx context.Context, app, conv string) (uint64, error)

	// Inbox returns every conversation of user (1:1 conversations it took
	// part in, groups it is a member of), with its last sequence number,
	// the sequence number device acknowledged, and the read receipts of
	// ConvState. A device that never
	// acknowledged a conversation starts from the user's join point: 0 for a
	// 1:1 conversation, the group's LastSeq when the user joined for a group.
	Inbox(ctx context.Context, app, user, device string) ([]ConvState, error)
	// SetAcked records that device of user has every message of conv with
	// seq <= seq. It never moves a cursor backwards.
	SetAcked(ctx context.Context, app, user, device, conv string, seq uint64) error

	// AddContact, RemoveContact and Contacts manage a user's contact list.
	// Adding an existing contact or removing a missing one is not an error.
	AddContact(ctx context.Context, app, user, contact string) error
	RemoveContact(ctx context.Context, app, user, contact string) error
	Contacts(ctx context.Context, app, user string) ([]string, error)

	// Groups. Every rule about membership, bans, the size limit and the
	// owner is decided by the write method itself, atomically with its
	// write: two concurrent calls on one group behave as if one ran after
	// the other. A group whose last member left is closed: every method
	// below but CreateGroup treats it as missing (ErrNotFound), CreateGroup
	// still reports its id taken (ErrExists), and its messages stay.
	// Members remember the order in which they joined; the earliest
	// remaining joiner (ties broken by user id) takes over from an owner
	// who leaves.

	// CreateGroup stores a new group with its owner as first member. It
	// returns ErrExists if the id is taken.
	CreateGroup(ctx context.Context, app string, g Group) error
	// GetGroup returns a group (with its current LastSeq) or ErrNotFound.
	GetGroup(ctx context.Context, app, id string) (Group, error)
	// JoinGroup makes user a member of a group, joining at the group's
	// current LastSeq. It returns ErrBanned if user was kicked and not
	// invited back by the owner since, and ErrFull if the group has
	// maxMembers members already (0 or less: no limit). Joining again is not an error, changes
	// nothing (the original join point stays) and returns added false.
	JoinGroup(ctx context.Context, app, id, user string, maxMembers int) (added bool, err error)
	// InviteMember makes user a member of a group on behalf of by, who must
	// be a member (ErrNotMember). Inviting a banned user is allowed to the
	// owner only, and lifts the ban; anyone else gets ErrBanned. It returns
	// ErrFull as JoinGroup does; inviting a member again is not an error and
	// returns added false.
	InviteMember(ctx context.Context, app, id, by, user string, maxMembers int) (added bool, err error)
	// LeaveGroup removes user, who must be a member (ErrNotMember), from a
	// group. When the owner leaves, the earliest remaining joiner becomes
	// owner in the same write, and is returned as newOwner. When the last
	// member leaves, the group is closed.
	LeaveGroup(ctx context.Context, app, id, user string) (newOwner string, err error)
	// KickMember removes user from a group, if a member, and bans them
	// from joining again, in one write; only the owner's InviteMember lifts
	// the ban. by must be the owner (ErrNotOwner, or ErrNotMember if by is
	// not a member either), and user must not be by.
	KickMember(ctx context.Context, app, id, by, user string) error
	// Members returns a group's members, sorted.
	Members(ctx context.Context, app, id string) ([]string, error)
	// UserGroups returns the groups user is a member of, sorted by id.
	UserGroups(ctx context.Context, app, user string) ([]Group, error)

	// NextEpoch increments the epoch of device of user and returns it: 1 at
	// the device's first call, then 2, 3, ... . The session layer calls it
	// at every CONNECT, so that every process sharing the store agrees
	// which of two connections of one device is the newer (REPLACED). The
	// write is durable, and concurrent calls return distinct values.
	NextEpoch(ctx context.Context, app, user, device string) (uint64, error)

	// Epoch returns the current epoch of device of user (the last
	// NextEpoch returned), 0 if it never connected. A session checks it
	// after registering with the router, so that a newer connection whose
	// announcement came before the registration still replaces it.
	Epoch(ctx context.Context, app, user, device string) (uint64, error)

	// PruneDedup forgets the de-duplication entries of messages stored
	// before t (by their Timestamp): a retry of such a message afterwards
	// is stored again, as a new message. Messages themselves stay. It
	// returns how many entries it forgot. The hub calls it periodically
	// with now minus the de-duplication window, so that the index does not
	// grow without bound.
	PruneDedup(ctx context.Context, before time.Time) (int, error)

	// ClaimPush returns up to limit outbox jobs due at now (Next <= now),
	// earliest Next first (ties by ID), and moves their Next to now+lease
	// in the same atomic step, so that a second process claiming at the
	// same time does not get them; a claimed job that is neither finished
	// nor retried is due again after the lease. The jobs returned carry
	// the Next the claim stored, the end of their lease. A job is claimable
	// only once its message is readable (Messages returns it), and never
	// by two calls within one lease. A limit <= 0 claims nothing; lease is
	// expected to be positive.
	ClaimPush(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]PushJob, error)
	// RetryPush stores job's Users (nil is stored as empty), Attempts and
	// Next under job.ID; App, Conv and Seq are not changed. A job that is
	// no longer in the outbox is not an error, and is not added back.
	RetryPush(ctx context.Context, job PushJob) error
	// FinishPush removes a job from the outbox. A missing job is not an
	// error.
	FinishPush(ctx context.Context, id uint64) error
	// PushBacklog returns how many jobs the outbox holds.
	PushBacklog(ctx context.Context) (int, error)
	// DeliveredTo returns those of users (in their order) of whom some
	// device acknowledged seq of conv (SetAcked with seq or more). A
	// group's join point does not count: only SetAcked does.
	DeliveredTo(ctx context.Context, app, conv string, seq uint64, users []string) ([]string, error)

	// SetRead moves user's read cursor of conv to seq if that is further,
	// and, if share, its shared read cursor (Receipt.Read, ConvState.
	// PeerRead as the other user sees it) to seq too; neither ever moves
	// back. The write is durable. It returns both cursors after the call;
	// read counts the user's own messages as read (see ConvState.Read).
	// seq is not checked against the conversation's last seq: the caller
	// does.
	SetRead(ctx context.Context, app, user, conv string, seq uint64, share bool) (read, shared uint64, err error)
	// Receipts returns the receipts in conv of each of users, in their
	// order (a user with none: zeros).
	Receipts(ctx context.Context, app, conv string, users []string) ([]Receipt, error)
	// Prefs returns user's settings (the zero Prefs if none were stored).
	Prefs(ctx context.Context, app, user string) (Prefs, error)
	// SetPrefs stores user's settings, durably.
	SetPrefs(ctx context.Context, app, user string, p Prefs) error
	// ContactOf returns those of owners (in their order) whose contact
	// list holds contact.
	ContactOf(ctx context.Context, app, contact string, owners []string) ([]string, error)

	// Close flushes and closes the store. Calls after Close return ErrClosed.
	Close() error
}

// DirectConv returns the conversation key of the 1:1 conversation between
// users a and b; it is the same for (a, b) and (b, a). User ids never
// contain ':'.
func DirectConv(a, b string) string {
	if b < a {
		a, b = b, a
	}
	return "u:" + a + ":" + b
}

// GroupConv returns the conversation key of a group.
func GroupConv(id string) string { return "g:" + id }

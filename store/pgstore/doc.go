// Package pgstore implements store.Store on PostgreSQL (pgx and pgxpool),
// the store of record that several qimd processes share.
//
// # Schema
//
// Every table lives in one PostgreSQL schema (Options.Schema, "qim" by
// default), which each pooled connection has as its search_path; several
// deployments, or tests, can share a database with schemas of their own.
// Open applies the embedded migrations (migrations/NNNN_*.sql, in version
// order) that the schema lacks, in one transaction holding
// pg_advisory_xact_lock on a key derived from the schema's name, and
// records each in schema_migrations: processes starting at once apply
// each migration once. The tables (see migrations/0001_init.sql,
// 0002_push_outbox.sql and 0003_receipts.sql):
//
//	convs          (app, conv) -> last_seq
//	messages       (app, conv, seq) -> msg, the proto-marshalled qimpb.Message
//	message_ids    a sequence giving message ids
//	dedup          (app, from_user, client_msg_id) -> conv, seq, created
//	inbox          (app, user_id, conv): the 1:1 conversations of a user
//	cursors        (app, user_id, device, conv) -> acked (index on app, conv, user_id)
//	reads          (app, user_id, conv) -> read_seq, shared_seq (read cursors)
//	prefs          (app, user_id) -> hide_read_receipts (store.Prefs)
//	contacts       (app, user_id, contact)
//	chat_groups    (app, id) -> name, owner, created, joins, members (0: closed)
//	group_members  (app, group_id, user_id) -> join_seq, join_num
//	group_bans     (app, group_id, user_id)
//	epochs         (app, user_id, device) -> epoch
//	push_outbox    id -> app, conv, seq, users, attempts, next (index on next, id)
//
// Ids are text in the "C" collation (sorted by bytes, as Go sorts
// strings), so the Store refuses ids that are not valid UTF-8 besides
// those pebblestore refuses (empty, or holding NUL); client message ids
// and group names are bytea and may hold any bytes.
//
// # Append
//
// Append is one transaction per call (the hub's committer batch), in two
// pipelined round trips whatever the number of messages (arrays passed to
// unnest):
//
//  1. BEGIN; look up the call's client message ids in dedup (duplicates
//     within the call are found in memory); bump convs.last_seq of every
//     conversation by its number of messages with one INSERT ... ON
//     CONFLICT DO UPDATE ... RETURNING, rows in sorted order, so that two
//     transactions lock conversations in the same order and never
//     deadlock; take ids from message_ids.
//  2. If the lookup found duplicates, their seqs are given back (the rows
//     are still locked). The messages are numbered and marshalled, then:
//     INSERT the messages, their dedup entries (sorted), the inbox rows of
//     a conversation's first message, the senders' read cursors (an
//     upsert, GREATEST), the outbox jobs of those with a PushAt (under
//     their message's id); COMMIT.
//
// The row lock on convs serializes the Appends of one conversation across
// processes until commit, and the messages commit with the last seq that
// covers them, so seqs are dense and readers never see a gap; an aborted
// transaction gives its seqs back. Ids come from a sequence (CACHE 1), so
// they are unique across processes and increase with each call of one
// Store. If another transaction commits one of the call's client message
// ids between the lookup and the insert, the insert waits for it, fails
// with a unique violation, and Append rolls back and starts again, this
// time finding the original: two Stores racing with one id store it once
// and both return its seq and id. Nothing read from the database is cached
// in memory.
//
// SetAcked commits with synchronous_commit off (SET LOCAL) and never moves
// a cursor backwards (GREATEST); every other write commits synchronously.
// NextEpoch is one upsert. The group write methods lock the group's row
// (SELECT ... FOR UPDATE) and decide membership, bans, the size limit and
// the owner hand-off in the same transaction.
//
// # Offline-push outbox
//
// ClaimPush is one statement: a CTE selects the due rows in (next, id)
// order, LIMIT n, FOR UPDATE SKIP LOCKED, and the UPDATE moves them to the
// end of the lease, RETURNING them; two processes claiming at once lock
// disjoint rows, and a row whose claim committed first is re-read before
// it is locked and dropped as no longer due. RetryPush and FinishPush are
// one UPDATE and one DELETE by id; PushBacklog counts the rows (no counter
// row, which every Append would have to update). DeliveredTo is one
// query over cursors, grouped by user.
//
// # Read cursors and receipts
//
// SetRead is one upsert that moves both cursors with GREATEST and
// returns them; it commits synchronously. Receipts, ContactOf and Inbox
// are one query each, whatever the number of users: arrays passed to
// unnest or ANY, and correlated subqueries that each probe an index
// (cursors_by_conv for a user's devices' cursors of one conversation).
//
// # De-duplication retention
//
// A dedup entry's created column is its message's Timestamp. PruneDedup
// deletes the entries created before its bound, through the index on
// created, at most 10,000 per statement, each its own short transaction.
// The hub calls it with now minus its de-duplication window; a retry
// older than that is stored as a new message.
//
// # Failures and recovery
//
// A lost connection (server restarted, network cut, backend terminated)
// fails the calls using it with an error wrapped with "pgstore: ...";
// pgxpool drops broken connections and dials new ones, so calls succeed
// again once the server is back, without reopening the Store. Every call
// is bounded by its context and by callTimeout (10 s); connecting is
// bounded by connect_timeout (5 s unless the URL sets it), and the server
// ends a session left idle inside a transaction after 30 s
// (idle_in_transaction_session_timeout, unless the URL sets it), releasing
// the row locks of a stalled process. An Append that fails may or may not
// have committed (the COMMIT may have been lost on its way back): a retry
// with the same client message ids is de-duplicated. Connections carry
// application_name "qimd" unless the URL sets one. After Close, every
// method returns store.ErrClosed.
package pgstore

package pgstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/qim-im/qim/store"
)

// Options configures a Store. Zero values take the documented defaults.
type Options struct {
	// Logger receives the Store's informational messages (migrations
	// applied). Nil discards them.
	Logger *slog.Logger
	// MaxConns is the size of the connection pool; 0 means pgxpool's
	// default, max(4, runtime.NumCPU()). A pool_max_conns parameter in the
	// URL is overridden when MaxConns is set.
	MaxConns int32
	// Schema is the PostgreSQL schema holding qim's tables, created if
	// missing; "" means "qim". Several Stores (processes) sharing one
	// schema share one store of record.
	Schema string
}

// Defaults applied by Open where the URL leaves them unset.
const (
	// DefaultSchema is the schema of Options.Schema "".
	DefaultSchema = "qim"
	// defaultApplicationName identifies qim's sessions in
	// pg_stat_activity (URL parameter application_name).
	defaultApplicationName = "qimd"
	// defaultConnectTimeout bounds the dial and start-up of a connection
	// (URL parameter connect_timeout).
	defaultConnectTimeout = 5 * time.Second
	// defaultIdleInTxTimeout makes the server end a session that stays
	// idle inside a transaction, so that a stalled process (stopped,
	// partitioned) does not hold conversation or group row locks that other
	// processes wait for (URL parameter idle_in_transaction_session_timeout,
	// in milliseconds). The Store's own transactions are never idle for more
	// than a few milliseconds.
	defaultIdleInTxTimeout = "30000"
)

// callTimeout bounds every call of the Store, in addition to the caller's
// context: a call that cannot finish within it (the server unreachable
// without a reset, a lock held by a stalled process) returns an error
// instead of hanging its caller.
const callTimeout = 10 * time.Second

// pruneChunk is how many de-duplication entries PruneDedup deletes per
// statement (and so per transaction).
const pruneChunk = 10_000

// Store is a store.Store kept in PostgreSQL. All methods are safe for
// concurrent use, by any number of goroutines and of Stores (processes)
// sharing the database and schema. A Store caches nothing read from the
// database: after a failed call, the next call sees the database as it is.
type Store struct {
	// Static after Open.
	pool       *pgxpool.Pool
	logger     *slog.Logger
	schema     string
	pruneChunk int // pruneChunk; tests lower it

	// closed is set once, by Close.
	closed atomic.Bool
	// dedupRetries counts the Append attempts started again after losing
	// a race for a client message id (errDedupRace).
	dedupRetries atomic.Int64
}

var _ store.Store = (*Store)(nil)

// Open connects to the PostgreSQL database at url (a postgres:// URL or a
// key=value connection string, as pgxpool.ParseConfig reads it), creates
// opts.Schema if needed and applies the schema migrations it lacks. Each
// connection of the pool uses opts.Schema as its search_path.
//
// Unless the URL sets them, Open sets application_name to "qimd",
// connect_timeout to 5 s and idle_in_transaction_session_timeout to 30 s.
// Open gives up when ctx ends.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	schema := opts.Schema
	if schema == "" {
		schema = DefaultSchema
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("pgstore: parse url: %w", err)
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	cc := cfg.ConnConfig
	if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = defaultConnectTimeout
	}
	params := cc.RuntimeParams
	params["search_path"] = pgx.Identifier{schema}.Sanitize()
	if params["application_name"] == "" {
		params["application_name"] = defaultApplicationName
	}
	if params["idle_in_transaction_session_timeout"] == "" {
		params["idle_in_transaction_session_timeout"] = defaultIdleInTxTimeout
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgstore: open: %w", err)
	}
	if err := migrate(ctx, pool, schema, logger); err != nil {
		pool.Close()
		return nil, fmt.Errorf("pgstore: migrate: %w", err)
	}
	return &Store{pool: pool, logger: logger, schema: schema, pruneChunk: pruneChunk}, nil
}

// Close closes the pool's connections, after waiting for the calls in
// progress (each bounded by its context and callTimeout). Every write is
// committed before its call returns, so nothing is lost; SetAcked's
// unsynced commits reach the disk with the server's next WAL flush. Calls
// after Close return store.ErrClosed.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return store.ErrClosed
	}
	s.pool.Close()
	return nil
}

// enter starts a call: it returns store.ErrClosed after Close, checkIDs's
// error if one of ids is not valid, and otherwise ctx bounded by
// callTimeout, with its cancel function.
func (s *Store) enter(ctx context.Context, ids ...string) (context.Context, context.CancelFunc, error) {
	if s.closed.Load() {
		return nil, nil, store.ErrClosed
	}
	if err := checkIDs(ids...); err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	return ctx, cancel, nil
}

// fail wraps err, the failure of operation op, with the package prefix.
// The sentinel errors of package store pass unwrapped; a call that failed
// because the Store was closed meanwhile returns store.ErrClosed.
func (s *Store) fail(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case isSentinel(err):
		return err
	case s.closed.Load():
		return fmt.Errorf("pgstore: %s: %w (%w)", op, store.ErrClosed, err)
	default:
		return fmt.Errorf("pgstore: %s: %w", op, err)
	}
}

func isSentinel(err error) bool {
	for _, e := range []error{store.ErrNotFound, store.ErrExists, store.ErrClosed, store.ErrBanned,
		store.ErrFull, store.ErrNotMember, store.ErrNotOwner, errInvalidID, errKickSelf} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// errInvalidID is returned for an id that PostgreSQL's text cannot hold or
// that pebblestore would refuse.
var errInvalidID = errors.New("pgstore: invalid id")

// checkIDs reports an error if any id is empty, contains NUL (refused by
// every backend, see pebblestore) or is not valid UTF-8 (which a text
// column cannot hold).
func checkIDs(ids ...string) error {
	for _, id := range ids {
		if id == "" || strings.IndexByte(id, 0) >= 0 || !utf8.ValidString(id) {
			return fmt.Errorf("%w: %q", errInvalidID, id)
		}
	}
	return nil
}

// execAll reads n results of a batch of statements without rows.
func execAll(br pgx.BatchResults, n int) error {
	for range n {
		if _, err := br.Exec(); err != nil {
			return err
		}
	}
	return nil
}

// rollback ends the transaction open on conn, if the connection still
// works, so that it can go back to the pool; otherwise the pool destroys
// it on release (pgxpool drops a connection not idle outside a
// transaction).
func rollback(conn *pgxpool.Conn) {
	if conn.Conn().IsClosed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, "ROLLBACK"); err != nil {
		conn.Conn().Close(ctx)
	}
}

package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	// Registers the pure-Go "sqlite" database/sql driver.
	_ "modernc.org/sqlite"

	"github.com/esflow/esflow/pkg/eventstore"
)

// DefaultBusyTimeout is how long a connection opened by [Open] waits for
// another writer (for example a second process on the same file) before
// giving up with SQLITE_BUSY.
const DefaultBusyTimeout = 5 * time.Second

// Config configures a [Store]. The zero value is ready to use.
type Config struct {
	// Schema names the events and snapshot tables and their columns.
	// The zero value means [eventstore.DefaultSchema]; empty fields are
	// filled with [eventstore.Schema.WithDefaults]. Names are validated
	// by [Open] and [New].
	Schema eventstore.Schema

	// BusyTimeout is the SQLite busy_timeout set on every connection
	// [Open] creates for a database file. Zero means
	// [DefaultBusyTimeout]. It does not apply to [New], whose caller
	// configures its own connections.
	BusyTimeout time.Duration
}

// Store is an [eventstore.Recorder] and [eventstore.SnapshotRecorder]
// backed by SQLite. It is safe for concurrent use. Create one with [Open]
// or [New], create its tables with [Store.Migrate], and release it with
// [Store.Close].
type Store struct {
	db     *sql.DB
	owned  bool // Close closes db
	schema eventstore.Schema
	q      queries

	// writeSlot serialises this Store's own append transactions in Go,
	// so in-process writers queue on a channel instead of polling
	// SQLite's busy handler. Other processes (and transactions begun by
	// callers through BeginTx) are still ordered by SQLite's write lock.
	writeSlot chan struct{}
	closed    atomic.Bool
}

var (
	_ eventstore.Recorder         = (*Store)(nil)
	_ eventstore.SnapshotRecorder = (*Store)(nil)
)

// Open opens (creating if needed) the SQLite database named by dsn; see
// [ParseDSN] for the accepted forms. In-memory databases live as long as
// the Store and are private to it: the Store keeps them on a single
// connection. Database files are opened in WAL mode with a busy timeout,
// foreign keys on, and write transactions that take the write lock at
// BEGIN (BEGIN IMMEDIATE), on every pooled connection.
//
// Open does not create tables; call [Store.Migrate].
func Open(ctx context.Context, dsn string, cfg Config) (*Store, error) {
	path, inMemory, err := ParseDSN(dsn)
	if err != nil {
		return nil, &eventstore.Error{Op: "open", Err: err}
	}
	schema, err := validSchema(cfg.Schema)
	if err != nil {
		return nil, &eventstore.Error{Op: "open", Err: err}
	}
	busy := cfg.BusyTimeout
	if busy <= 0 {
		busy = DefaultBusyTimeout
	}
	params := url.Values{}
	params.Add("_pragma", "busy_timeout("+strconv.FormatInt(busy.Milliseconds(), 10)+")")
	params.Add("_pragma", "foreign_keys(1)")
	params.Set("_txlock", "immediate")
	var driverDSN string
	if inMemory {
		driverDSN = ":memory:?" + params.Encode()
	} else {
		params.Add("_pragma", "journal_mode(WAL)")
		if strings.HasPrefix(path, "file:") {
			// A plain name must not be mistaken for a SQLite URI.
			path = "./" + path
		}
		driverDSN = path + "?" + params.Encode()
	}
	db, err := sql.Open("sqlite", driverDSN)
	if err != nil {
		return nil, &eventstore.Error{Op: "open", Err: err}
	}
	if inMemory {
		// ":memory:" is one database per connection: keep exactly one
		// connection, forever, so the Store sees a single database.
		db.SetMaxOpenConns(1)
		db.SetMaxIdleConns(1)
		db.SetConnMaxLifetime(0)
		db.SetConnMaxIdleTime(0)
	}
	if err := ping(ctx, db, busy); err != nil {
		_ = db.Close()
		return nil, &eventstore.Error{Op: "open", Err: fmt.Errorf("open %q: %w", dsn, err)}
	}
	return newStore(db, true, schema), nil
}

// New returns a Store on a caller-owned database handle opened with the
// "sqlite" driver (modernc.org/sqlite). [Store.Close] leaves db open.
//
// For concurrent writers the caller's DSN should set a busy timeout and
// "_txlock=immediate", as [Open] does; an in-memory database must be
// shared by all of db's connections (for example db.SetMaxOpenConns(1)).
func New(db *sql.DB, cfg Config) (*Store, error) {
	if db == nil {
		return nil, &eventstore.Error{Op: "new", Err: errors.New("nil *sql.DB")}
	}
	schema, err := validSchema(cfg.Schema)
	if err != nil {
		return nil, &eventstore.Error{Op: "new", Err: err}
	}
	return newStore(db, false, schema), nil
}

func validSchema(s eventstore.Schema) (eventstore.Schema, error) {
	s = s.WithDefaults()
	if err := s.Validate(); err != nil {
		return s, err
	}
	return s, nil
}

func newStore(db *sql.DB, owned bool, schema eventstore.Schema) *Store {
	return &Store{
		db:        db,
		owned:     owned,
		schema:    schema,
		q:         buildQueries(schema),
		writeSlot: make(chan struct{}, 1),
	}
}

// Schema returns the validated schema the Store uses, defaults filled in.
func (s *Store) Schema() eventstore.Schema { return s.schema }

// DB returns the underlying database handle, for example to run other
// statements in a transaction begun with [Store.BeginTx]. The Store still
// owns a handle it opened with [Open]: do not close it.
func (s *Store) DB() *sql.DB { return s.db }

// Close releases the Store. It closes the database when the Store opened
// it ([Open]); a handle passed to [New] stays open. Calls after Close
// return an error matching [eventstore.ErrClosed]. Close is idempotent.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if !s.owned {
		return nil
	}
	if err := s.db.Close(); err != nil {
		return &eventstore.Error{Op: "close", Err: err}
	}
	return nil
}

// usable reports ErrClosed or the context's error before an operation.
func (s *Store) usable(ctx context.Context, op string) error {
	if s.closed.Load() {
		return &eventstore.Error{Op: op, Err: eventstore.ErrClosed}
	}
	if err := ctx.Err(); err != nil {
		return &eventstore.Error{Op: op, Err: err}
	}
	return nil
}

// BeginTx begins a write transaction. On a Store from [Open] it takes the
// database's write lock at once (BEGIN IMMEDIATE), so later writes in it
// cannot fail with a lock upgrade conflict. Use it with [Store.AppendTx]
// to commit records together with other rows (a transactional outbox).
// Keep such transactions short: they block every other writer. On an
// in-memory Store the transaction holds the Store's only connection, so
// do not call other Store methods until it ends.
func (s *Store) BeginTx(ctx context.Context) (*sql.Tx, error) {
	if err := s.usable(ctx, "begin"); err != nil {
		return nil, err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, &eventstore.Error{Op: "begin", Err: TranslateError(err)}
	}
	return tx, nil
}

// ParseDSN interprets the data source names [Open] accepts and returns
// the database file path, or inMemory true for a private in-memory
// database:
//
//	sqlite:///abs/path.db      absolute path /abs/path.db
//	sqlite://relative/path.db  relative path relative/path.db
//	sqlite:relative/path.db    relative path relative/path.db
//	sqlite:///:memory:         in memory
//	sqlite://:memory:          in memory
//	sqlite::memory:            in memory
//	:memory:                   in memory
//	/any/plain/path.db         the path as given
//
// URL forms are percent-decoded. Query strings, fragments, hosts other
// than a relative path's first segment, other URL schemes, and paths
// containing '?' are rejected.
func ParseDSN(dsn string) (path string, inMemory bool, err error) {
	if dsn == "" {
		return "", false, errors.New("sqlite: empty DSN")
	}
	const scheme = "sqlite:"
	if len(dsn) >= len(scheme) && strings.EqualFold(dsn[:len(scheme)], scheme) {
		rest := dsn[len(scheme):]
		if strings.ContainsAny(rest, "?#") {
			return "", false, fmt.Errorf("sqlite: DSN %q: query strings and fragments are not supported", dsn)
		}
		// "sqlite://x" drops the authority marker; "sqlite:///abs" keeps
		// the third slash as the root of an absolute path.
		rest = strings.TrimPrefix(rest, "//")
		decoded, err := url.PathUnescape(rest)
		if err != nil {
			return "", false, fmt.Errorf("sqlite: DSN %q: %w", dsn, err)
		}
		if decoded == ":memory:" || decoded == "/:memory:" {
			return "", true, nil
		}
		if strings.Contains(decoded, "?") {
			return "", false, fmt.Errorf("sqlite: DSN %q: '?' is not allowed in a path", dsn)
		}
		if decoded == "" || decoded == "/" {
			return "", false, fmt.Errorf("sqlite: DSN %q names no database file", dsn)
		}
		return decoded, false, nil
	}
	if i := strings.Index(dsn, "://"); i > 0 && !strings.ContainsAny(dsn[:i], `/\`) {
		return "", false, fmt.Errorf("sqlite: DSN %q: unsupported scheme %q", dsn, dsn[:i])
	}
	if dsn == ":memory:" {
		return "", true, nil
	}
	if strings.Contains(dsn, "?") {
		return "", false, fmt.Errorf("sqlite: DSN %q: '?' is not allowed in a path", dsn)
	}
	return dsn, false, nil
}

// ping opens the first connection. Switching a new file to WAL needs an
// exclusive lock, and SQLite reports SQLITE_BUSY for that without calling
// the busy handler when another process or Store is doing the same; a
// failed connection is discarded, so retrying runs the pragmas again.
func ping(ctx context.Context, db *sql.DB, within time.Duration) error {
	deadline := time.Now().Add(within)
	for wait := 5 * time.Millisecond; ; wait = min(wait*2, 100*time.Millisecond) {
		err := db.PingContext(ctx)
		if err == nil || !strings.Contains(err.Error(), "SQLITE_BUSY") || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

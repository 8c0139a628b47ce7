package mysql

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/esflow/esflow/internal/migrate"
	"github.com/esflow/esflow/pkg/eventstore"
)

// MigrationsTable records which migrations have been applied to which
// table: one row per (table_name, version).
const MigrationsTable = "esflow_schema_migrations"

// CountersTable holds, per events table, the highest notification id
// handed out (see DESIGN.md).
const CountersTable = "esflow_notification_counters"

// maxCachedStatements bounds the prepared statements a Store keeps; rarer
// query shapes beyond it are prepared per call.
const maxCachedStatements = 256

// Config configures a [Store]. The zero value is ready to use.
type Config struct {
	// Schema names the events and snapshot tables and their columns.
	// The zero value means [eventstore.DefaultSchema]; empty fields are
	// filled with [eventstore.Schema.WithDefaults]. Names are validated
	// by [Open] and [New].
	Schema eventstore.Schema
}

// Store is an [eventstore.Recorder] and [eventstore.SnapshotRecorder] on
// MariaDB or MySQL (InnoDB). It is safe for concurrent use. Create one
// with [Open] or [New], create its tables with [Store.Migrate], and
// release it with [Store.Close].
type Store struct {
	db     *sql.DB
	owned  bool
	schema eventstore.Schema
	names  names
	q      queries
	closed atomic.Bool

	stmtMu sync.Mutex
	stmts  map[string]*sql.Stmt
}

var (
	_ eventstore.Recorder         = (*Store)(nil)
	_ eventstore.SnapshotRecorder = (*Store)(nil)
)

// names are the template fields: validated identifiers, already quoted.
type names struct {
	Table, SnapshotTable, Counters, StreamKey string
	StreamID, Position, Topic, Data           string
	// TableLiteral is the events table's name as a SQL string literal
	// (the key of its counter row).
	TableLiteral string
}

// Quote returns a validated identifier in backquotes, MariaDB's and
// MySQL's identifier quotes in every sql_mode. Callers validate first;
// quoting is a second line of defence.
func Quote(ident string) string { return "`" + strings.ReplaceAll(ident, "`", "``") + "`" }

func quotedNames(s eventstore.Schema) names {
	return names{
		Table:         Quote(s.Table),
		SnapshotTable: Quote(s.SnapshotTable),
		Counters:      Quote(CountersTable),
		// Table is at most 48 bytes: the suffixed name fits in 64.
		StreamKey:    Quote(s.Table + "_stream_key"),
		StreamID:     Quote(s.StreamIDColumn),
		Position:     Quote(s.PositionColumn),
		Topic:        Quote(s.TopicColumn),
		Data:         Quote(s.DataColumn),
		TableLiteral: "'" + s.Table + "'",
	}
}

// Open connects to dsn (see [ParseDSN]) and returns a Store that owns the
// pool: [Store.Close] closes it. It does not create tables; call
// [Store.Migrate].
func Open(ctx context.Context, dsn string, cfg Config) (*Store, error) {
	schema, err := validSchema(cfg.Schema)
	if err != nil {
		return nil, &eventstore.Error{Op: "open", Err: err}
	}
	db, err := OpenDB(dsn)
	if err != nil {
		return nil, &eventstore.Error{Op: "open", Err: err}
	}
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, &eventstore.Error{Op: "open", Err: fmt.Errorf("connect: %w", err)}
	}
	s := newStore(db, schema)
	s.owned = true
	return s, nil
}

// New returns a Store on a caller-owned pool opened with the
// github.com/go-sql-driver/mysql driver; it should parse times
// (parseTime=true, loc=UTC), as pools from [OpenDB] do. [Store.Close]
// leaves db open. New does not touch the database.
func New(db *sql.DB, cfg Config) (*Store, error) {
	if db == nil {
		return nil, &eventstore.Error{Op: "new", Err: errors.New("nil *sql.DB")}
	}
	schema, err := validSchema(cfg.Schema)
	if err != nil {
		return nil, &eventstore.Error{Op: "new", Err: err}
	}
	return newStore(db, schema), nil
}

func validSchema(s eventstore.Schema) (eventstore.Schema, error) {
	s = s.WithDefaults()
	return s, s.Validate()
}

func newStore(db *sql.DB, schema eventstore.Schema) *Store {
	n := quotedNames(schema)
	return &Store{db: db, schema: schema, names: n, q: buildQueries(n), stmts: map[string]*sql.Stmt{}}
}

// DB returns the connection pool, for example to add rows to a
// transaction from [Store.BeginTx]. Do not close a pool the Store owns.
func (s *Store) DB() *sql.DB { return s.db }

// Schema returns the validated schema, defaults filled in.
func (s *Store) Schema() eventstore.Schema { return s.schema }

// Close marks the store closed (later calls fail with
// [eventstore.ErrClosed]), closes its prepared statements and, when the
// Store opened it, the pool. It is idempotent.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.stmtMu.Lock()
	var errs []error
	for _, st := range s.stmts {
		errs = append(errs, st.Close())
	}
	s.stmts = map[string]*sql.Stmt{}
	s.stmtMu.Unlock()
	if s.owned {
		errs = append(errs, s.db.Close())
	}
	if err := errors.Join(errs...); err != nil {
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

// stmt returns a prepared statement for query, prepared once per Store
// (and once per pooled connection by database/sql): with
// interpolateParams=false an unprepared call with arguments costs a
// PREPARE and an EXECUTE round trip each time. When the cache is full the
// statement is temporary: the caller closes it after use.
func (s *Store) stmt(ctx context.Context, query string) (st *sql.Stmt, temporary bool, err error) {
	s.stmtMu.Lock()
	defer s.stmtMu.Unlock()
	if st, ok := s.stmts[query]; ok {
		return st, false, nil
	}
	st, err = s.db.PrepareContext(ctx, query)
	if err != nil {
		return nil, false, fmt.Errorf("prepare: %w", err)
	}
	if len(s.stmts) >= maxCachedStatements {
		return st, true, nil
	}
	s.stmts[query] = st
	return st, false, nil
}

// cached returns the cached statement for query, if any.
func (s *Store) cached(query string) *sql.Stmt {
	s.stmtMu.Lock()
	defer s.stmtMu.Unlock()
	return s.stmts[query]
}

// Stmt returns a prepared statement for query bound to tx, from the
// Store's cache, for callers (the outbox) that run their own statements
// in a transaction from [Store.BeginTx]. It is closed with tx.
func (s *Store) Stmt(ctx context.Context, tx *sql.Tx, query string) (*sql.Stmt, error) {
	if st := s.cached(query); st != nil {
		return tx.StmtContext(ctx, st), nil
	}
	s.stmtMu.Lock()
	full := len(s.stmts) >= maxCachedStatements
	s.stmtMu.Unlock()
	if full {
		// Prepared on tx's connection and closed with tx.
		st, err := tx.PrepareContext(ctx, query)
		if err != nil {
			return nil, fmt.Errorf("prepare: %w", err)
		}
		return st, nil
	}
	st, temporary, err := s.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	if temporary { // the cache filled up meanwhile
		_ = st.Close()
		if st, err = tx.PrepareContext(ctx, query); err != nil {
			return nil, fmt.Errorf("prepare: %w", err)
		}
		return st, nil
	}
	return tx.StmtContext(ctx, st), nil
}

// QueryContext runs query on the pool as a prepared statement from the
// Store's cache, for callers (the outbox) sharing the Store's pool.
func (s *Store) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return s.query(ctx, query, args...)
}

// ExecContext runs a statement on the pool as a prepared statement from
// the Store's cache.
func (s *Store) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return s.exec(ctx, query, args...)
}

// query runs a cached prepared query on the pool.
func (s *Store) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, temporary, err := s.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	if temporary {
		defer st.Close() // database/sql closes it once rows are closed
	}
	return st.QueryContext(ctx, args...)
}

// exec runs a cached prepared statement on the pool.
func (s *Store) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	st, temporary, err := s.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	if temporary {
		defer st.Close()
	}
	return st.ExecContext(ctx, args...)
}

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrate creates or upgrades the events, counters and snapshot tables.
// It is idempotent and safe to call concurrently, from other processes
// too (see [ApplyMigrations]).
func (s *Store) Migrate(ctx context.Context) error {
	const op = "migrate"
	if err := s.usable(ctx, op); err != nil {
		return err
	}
	if err := ApplyMigrations(ctx, s.db, migrationFiles, "migrations", s.schema.Table, s.names); err != nil {
		return &eventstore.Error{Op: op, Err: err}
	}
	return nil
}

// ApplyMigrations applies the versioned SQL templates in dir of fsys
// (files <version>_<title>.sql, text/template filled with data) that
// [MigrationsTable] does not yet record for key, in version order, and
// records them. Statements in a file are separated by a semicolon at the
// end of a line and run one by one (DDL commits implicitly in MariaDB, so
// a file should be safe to re-run: CREATE … IF NOT EXISTS). Concurrent
// callers on one database queue on a named server lock (GET_LOCK), held
// on one connection for the whole run. The outbox backend uses it for its
// own tables.
func ApplyMigrations(ctx context.Context, db *sql.DB, fsys fs.FS, dir, key string, data any) (err error) {
	ms, err := migrate.Load(fsys, dir)
	if err != nil {
		return err
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	// Lock names are server-wide and at most 64 characters: derive one
	// from the current database's name.
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, `SELECT GET_LOCK(CONCAT('esflow_migrate_', SHA1(DATABASE())), 120)`).Scan(&got); err != nil {
		return fmt.Errorf("lock: %w", err)
	}
	if !got.Valid || got.Int64 != 1 {
		return errors.New("lock: timed out waiting for another migration")
	}
	defer func() {
		uctx := context.WithoutCancel(ctx)
		if _, uerr := conn.ExecContext(uctx, `SELECT RELEASE_LOCK(CONCAT('esflow_migrate_', SHA1(DATABASE())))`); uerr != nil {
			// The lock dies with the session: drop the connection.
			_ = conn.Raw(func(any) error { return errBadConn })
			err = errors.Join(err, fmt.Errorf("unlock: %w", uerr))
		}
	}()
	mt := Quote(MigrationsTable)
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+mt+` (
    table_name VARCHAR(64) NOT NULL,
    version INT NOT NULL,
    applied_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (table_name, version)
) ENGINE=InnoDB`); err != nil {
		return fmt.Errorf("create %s: %w", MigrationsTable, err)
	}
	rows, err := conn.QueryContext(ctx, `SELECT version FROM `+mt+` WHERE table_name = ?`, key)
	if err != nil {
		return fmt.Errorf("read applied migrations: %w", err)
	}
	applied := map[int]bool{}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			_ = rows.Close()
			return fmt.Errorf("read applied migrations: %w", err)
		}
		applied[v] = true
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return fmt.Errorf("read applied migrations: %w", err)
	}
	for _, m := range ms {
		if applied[m.Version] {
			continue
		}
		var b strings.Builder
		if err := m.Template.Execute(&b, data); err != nil {
			return fmt.Errorf("render migration %s: %w", m.Name, err)
		}
		for _, stmt := range splitStatements(b.String()) {
			if _, err := conn.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("apply migration %s: %w", m.Name, err)
			}
		}
		if _, err := conn.ExecContext(ctx, `INSERT INTO `+mt+` (table_name, version) VALUES (?, ?)`, key, m.Version); err != nil {
			return fmt.Errorf("record migration %s: %w", m.Name, err)
		}
	}
	return nil
}

// splitStatements cuts a migration into statements at semicolons that
// end a line, dropping parts that hold only comments and blanks. The
// migrations are ours: no string literal spans such a semicolon.
func splitStatements(script string) []string {
	var out []string
	var cur strings.Builder
	flush := func() {
		text := strings.TrimSpace(cur.String())
		cur.Reset()
		for _, line := range strings.Split(text, "\n") {
			if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "--") {
				out = append(out, text)
				return
			}
		}
	}
	for _, line := range strings.SplitAfter(script, "\n") {
		trimmed := strings.TrimRight(line, " \t\r\n")
		if strings.HasSuffix(trimmed, ";") {
			cur.WriteString(strings.TrimSuffix(trimmed, ";"))
			flush()
			continue
		}
		cur.WriteString(line)
	}
	flush()
	return out
}

package projection

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Dialect names the SQL dialect behind a [DB]. Projections write SQL in
// the common subset of PostgreSQL and SQLite ($1 placeholders, INSERT …
// ON CONFLICT … DO UPDATE, CURRENT_TIMESTAMP) and switch on Dialect only
// where the two differ (column types, mostly).
type Dialect int

// Supported dialects.
const (
	Postgres Dialect = iota + 1
	SQLite
)

func (d Dialect) String() string {
	switch d {
	case Postgres:
		return "postgres"
	case SQLite:
		return "sqlite"
	}
	return fmt.Sprintf("Dialect(%d)", int(d))
}

// ErrNoRows is matched (errors.Is) by the error of [Row.Scan] when the
// query returned no row, whatever the driver.
var ErrNoRows = errors.New("projection: no rows in result set")

// Tx is a database transaction as a projection sees it. The runner owns
// it: handlers must not commit or roll it back.
type Tx interface {
	// Exec runs a statement and returns the number of rows it affected.
	Exec(ctx context.Context, sql string, args ...any) (rowsAffected int64, err error)
	// Query runs a query; the caller must Close the rows.
	Query(ctx context.Context, sql string, args ...any) (Rows, error)
	// QueryRow runs a query expected to return at most one row. Errors are
	// deferred to Row.Scan.
	QueryRow(ctx context.Context, sql string, args ...any) Row
	// Dialect of the underlying database.
	Dialect() Dialect
}

// Rows is the result of [Tx.Query].
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

// Row is the result of [Tx.QueryRow].
type Row interface {
	// Scan copies the row's columns into dest; without a row its error
	// matches ErrNoRows.
	Scan(dest ...any) error
}

// DB runs transactions. [NewPostgres] and [NewSQLite] adapt pgx and
// database/sql.
type DB interface {
	// InTx runs fn in a transaction and commits it when fn returns nil; it
	// rolls back otherwise and returns fn's error.
	InTx(ctx context.Context, fn func(Tx) error) error
	Dialect() Dialect
}

// NewPostgres adapts a pgx pool.
func NewPostgres(pool *pgxpool.Pool) DB { return pgDB{pool: pool} }

type pgDB struct{ pool *pgxpool.Pool }

func (pgDB) Dialect() Dialect { return Postgres }

func (d pgDB) InTx(ctx context.Context, fn func(Tx) error) error {
	tx, err := d.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("projection: begin: %w", err)
	}
	if err := fn(pgTx{tx}); err != nil {
		_ = tx.Rollback(context.WithoutCancel(ctx)) // the fn error is the one to report
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("projection: commit: %w", err)
	}
	return nil
}

type pgTx struct{ tx pgx.Tx }

func (pgTx) Dialect() Dialect { return Postgres }

func (t pgTx) Exec(ctx context.Context, sql string, args ...any) (int64, error) {
	tag, err := t.tx.Exec(ctx, sql, args...)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

func (t pgTx) Query(ctx context.Context, sql string, args ...any) (Rows, error) {
	rows, err := t.tx.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return pgRows{rows}, nil
}

func (t pgTx) QueryRow(ctx context.Context, sql string, args ...any) Row {
	return pgRow{t.tx.QueryRow(ctx, sql, args...)}
}

type pgRows struct{ pgx.Rows }

func (r pgRows) Close() { r.Rows.Close() }

type pgRow struct{ row pgx.Row }

func (r pgRow) Scan(dest ...any) error {
	err := r.row.Scan(dest...)
	if errors.Is(err, pgx.ErrNoRows) {
		return noRows{err}
	}
	return err
}

// noRows wraps a driver's no-rows error so that it matches ErrNoRows too.
type noRows struct{ err error }

func (e noRows) Error() string        { return e.err.Error() }
func (e noRows) Unwrap() error        { return e.err }
func (e noRows) Is(target error) bool { return target == ErrNoRows }

// NewSQLite adapts a database/sql handle of the modernc.org/sqlite driver
// (driver name "sqlite"). Use a file database in WAL mode with a busy
// timeout when other connections read while the runner writes.
func NewSQLite(db *sql.DB) DB { return sqliteDB{db: db} }

type sqliteDB struct{ db *sql.DB }

func (sqliteDB) Dialect() Dialect { return SQLite }

func (d sqliteDB) InTx(ctx context.Context, fn func(Tx) error) error {
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("projection: begin: %w", err)
	}
	if err := fn(sqlTx{tx}); err != nil {
		_ = tx.Rollback() // the fn error is the one to report
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("projection: commit: %w", err)
	}
	return nil
}

type sqlTx struct{ tx *sql.Tx }

func (sqlTx) Dialect() Dialect { return SQLite }

func (t sqlTx) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := t.tx.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (t sqlTx) Query(ctx context.Context, query string, args ...any) (Rows, error) {
	rows, err := t.tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return sqlRows{rows}, nil
}

func (t sqlTx) QueryRow(ctx context.Context, query string, args ...any) Row {
	return sqlRow{t.tx.QueryRowContext(ctx, query, args...)}
}

type sqlRows struct{ *sql.Rows }

func (r sqlRows) Close() { _ = r.Rows.Close() } // Err reports what matters

type sqlRow struct{ row *sql.Row }

func (r sqlRow) Scan(dest ...any) error {
	err := r.row.Scan(dest...)
	if errors.Is(err, sql.ErrNoRows) {
		return noRows{err}
	}
	return err
}

// identifier is what table and projection names must look like: they
// end up in SQL (quoted) and in Kafka group ids.
var identifier = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]{0,62}$`)

// ValidIdentifier reports whether s is accepted as a projection or table
// name: a letter or underscore, then letters, digits or underscores, at
// most 63 characters (PostgreSQL's limit).
func ValidIdentifier(s string) bool { return identifier.MatchString(s) }

// QuoteIdentifier quotes a validated identifier for use in SQL.
func QuoteIdentifier(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// Tables maps a projection's logical table names to the quoted physical
// identifiers its SQL must use. Normally the two are the same name; a
// rebuild maps them to fresh shadow tables.
type Tables struct{ m map[string]string }

// NewTables maps each logical name to logical+suffix. Names and suffix
// must satisfy [ValidIdentifier].
func NewTables(logical []string, suffix string) (Tables, error) {
	t := Tables{m: make(map[string]string, len(logical))}
	for _, n := range logical {
		if !ValidIdentifier(n + suffix) {
			return Tables{}, fmt.Errorf("projection: invalid table name %q", n+suffix)
		}
		t.m[n] = QuoteIdentifier(n + suffix)
	}
	return t, nil
}

// Name returns the quoted physical identifier of a logical table. A name
// the projection did not declare in Tables() maps to a quoted identifier
// that names it as undeclared, so the SQL fails with a clear message
// instead of touching a live table during a rebuild.
func (t Tables) Name(logical string) string {
	if q, ok := t.m[logical]; ok {
		return q
	}
	return QuoteIdentifier("undeclared table " + logical)
}

// Values returns the VALUES list "($1,$2),($3,$4),…" for a multi-row
// INSERT of rows rows of cols columns, numbered from start (usually 1).
// Batch handlers use it to write a whole batch in one statement.
func Values(rows, cols, start int) string {
	var b strings.Builder
	n := start
	for r := range rows {
		if r > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('(')
		for c := range cols {
			if c > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "$%d", n)
			n++
		}
		b.WriteByte(')')
	}
	return b.String()
}

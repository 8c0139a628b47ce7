package projection

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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
//
// Its transactions save round trips, which on a busy machine cost more
// than the statements themselves: BEGIN is not sent on its own but
// pipelined with the transaction's first statement, a transaction that
// ran no statement sends nothing, and the runner's tracking upsert
// travels with COMMIT (see pgTx.execAtCommit).
func NewPostgres(pool *pgxpool.Pool) DB { return pgDB{pool: pool} }

type pgDB struct{ pool *pgxpool.Pool }

func (pgDB) Dialect() Dialect { return Postgres }

func (d pgDB) InTx(ctx context.Context, fn func(Tx) error) error {
	conn, err := d.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("projection: begin: %w", err)
	}
	// pgxpool destroys a connection released inside a transaction, so a
	// failed ROLLBACK cannot leak one.
	defer conn.Release()
	t := &pgTx{conn: conn.Conn()}
	if err := fn(t); err != nil {
		t.rollback(ctx)
		return err
	}
	return t.commit(ctx)
}

// autocommit implements autocommitter: fn's statements run on one
// connection outside a transaction, each its own (implicit) transaction,
// each one round trip.
func (d pgDB) autocommit(ctx context.Context, fn func(Tx) error) error {
	conn, err := d.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("projection: acquire: %w", err)
	}
	defer conn.Release()
	return fn(&pgTx{conn: conn.Conn(), begun: true}) // begun: no BEGIN is sent, nor COMMIT
}

// warm implements warmer: it holds up to n connections of the pool at
// once (opening those the pool lacks) and runs fn in a transaction on
// each, rolled back, so that fn's statements are prepared on all of them.
func (d pgDB) warm(ctx context.Context, n int, fn func(Tx) error) error {
	n = min(n, int(d.pool.Config().MaxConns))
	conns := make([]*pgxpool.Conn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() {
			c, err := d.pool.Acquire(ctx)
			if err != nil {
				errs[i] = err
				return
			}
			conns[i] = c
			t := &pgTx{conn: c.Conn()}
			errs[i] = fn(t)
			t.rollback(ctx)
		})
	}
	wg.Wait()
	for _, c := range conns {
		if c != nil {
			c.Release()
		}
	}
	return errors.Join(errs...)
}

// pgTx is a transaction on one connection. BEGIN is sent lazily, in the
// same pipeline as the first statement.
type pgTx struct {
	conn  *pgx.Conn
	begun bool // BEGIN has been sent
	last  *atCommit
}

// atCommit is a statement sent in one pipeline with COMMIT. It must
// raise an error when its effect is not the expected one (nothing can
// look at its result before COMMIT runs); mapErr translates that error.
type atCommit struct {
	sql    string
	args   []any
	mapErr func(error) error
}

func (*pgTx) Dialect() Dialect { return Postgres }

// execAtCommit queues a statement to run just before COMMIT, in the same
// round trip. Only the last queued statement is kept.
func (t *pgTx) execAtCommit(sql string, args []any, mapErr func(error) error) {
	t.last = &atCommit{sql: sql, args: args, mapErr: mapErr}
}

// begin returns a batch that starts the transaction when it has not
// been started yet, or nil.
func (t *pgTx) begin() *pgx.Batch {
	if t.begun {
		return nil
	}
	t.begun = true
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	return b
}

func (t *pgTx) Exec(ctx context.Context, sql string, args ...any) (int64, error) {
	if err := t.flushAtCommit(ctx); err != nil {
		return 0, err
	}
	b := t.begin()
	if b == nil || len(args) == 0 {
		if b != nil {
			// pgx sends a statement without arguments as a simple query,
			// which may hold several statements: keep that, in the same
			// message as BEGIN.
			sql = "BEGIN;\n" + sql
		}
		tag, err := t.conn.Exec(ctx, sql, args...)
		if err != nil {
			return 0, err
		}
		return tag.RowsAffected(), nil
	}
	b.Queue(sql, args...)
	br := t.conn.SendBatch(ctx, b)
	_, err := br.Exec()
	var tag pgconn.CommandTag
	if err == nil {
		tag, err = br.Exec()
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

func (t *pgTx) Query(ctx context.Context, sql string, args ...any) (Rows, error) {
	if err := t.flushAtCommit(ctx); err != nil {
		return nil, err
	}
	b := t.begin()
	if b == nil {
		rows, err := t.conn.Query(ctx, sql, args...)
		if err != nil {
			return nil, err
		}
		return pgRows{rows}, nil
	}
	b.Queue(sql, args...)
	br := t.conn.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		_ = br.Close() // returns the same error
		return nil, err
	}
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return nil, err
	}
	return &pgBatchRows{Rows: rows, br: br}, nil
}

// QueryRow sends BEGIN on its own when needed: a caller that never
// scans would otherwise leave the pipeline open.
func (t *pgTx) QueryRow(ctx context.Context, sql string, args ...any) Row {
	if err := t.flushAtCommit(ctx); err != nil {
		return errRow{err}
	}
	if !t.begun {
		t.begun = true
		if _, err := t.conn.Exec(ctx, "BEGIN"); err != nil {
			return errRow{err}
		}
	}
	return pgRow{t.conn.QueryRow(ctx, sql, args...)}
}

// flushAtCommit runs a statement queued for COMMIT at once when another
// statement follows it, keeping the statements' order.
func (t *pgTx) flushAtCommit(ctx context.Context) error {
	if t.last == nil {
		return nil
	}
	last := t.last
	t.last = nil
	_, err := t.Exec(ctx, last.sql, last.args...)
	if err != nil && last.mapErr != nil {
		err = last.mapErr(err)
	}
	return err
}

func (t *pgTx) rollback(ctx context.Context) {
	if !t.begun {
		return
	}
	if _, err := t.conn.Exec(context.WithoutCancel(ctx), "ROLLBACK"); err != nil {
		// The connection is unusable or still in the transaction: make
		// sure the pool does not hand it out again.
		_ = t.conn.Close(context.WithoutCancel(ctx))
	}
}

func (t *pgTx) commit(ctx context.Context) error {
	if !t.begun && t.last == nil {
		return nil // nothing was sent: nothing to commit
	}
	b := t.begin()
	if b == nil {
		b = &pgx.Batch{}
	}
	lastAt := -1
	var last atCommit
	if t.last != nil {
		last, lastAt = *t.last, b.Len()
		t.last = nil
		b.Queue(last.sql, last.args...)
	}
	b.Queue("COMMIT")
	br := t.conn.SendBatch(ctx, b)
	var err error
	var tag pgconn.CommandTag
	failed := -1
	for i := range b.Len() {
		if tag, err = br.Exec(); err != nil {
			failed = i
			break
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.rollback(ctx)
		if failed == lastAt && last.mapErr != nil {
			return last.mapErr(err)
		}
		return fmt.Errorf("projection: commit: %w", err)
	}
	// COMMIT of a failed transaction answers ROLLBACK instead of an error.
	if tag.String() == "ROLLBACK" {
		return fmt.Errorf("projection: commit: %w", pgx.ErrTxCommitRollback)
	}
	return nil
}

// pgBatchRows are the rows of a statement sent with BEGIN: closing them
// also ends the pipeline.
type pgBatchRows struct {
	pgx.Rows
	br  pgx.BatchResults
	err error
}

func (r *pgBatchRows) Close() {
	r.Rows.Close()
	r.err = r.br.Close()
}

func (r *pgBatchRows) Err() error {
	if err := r.Rows.Err(); err != nil {
		return err
	}
	return r.err
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

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

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

// lockMember implements memberLocker: the two-key advisory lock
// (lockNamespace, member) on a connection of its own, outside the pool,
// so that it neither counts against the pool's size nor goes back to it.
// The same connection LISTENs on leaseChannel, and a notification from
// another member of the projection (a release, a join) is passed to
// wake. A second without one, the connection is pinged; lost closes
// when a ping or the wait fails. release closes the connection, which
// frees the lock.
func (d pgDB) lockMember(ctx context.Context, projection string, member int64) (memberSession, bool, error) {
	conn, err := pgx.ConnectConfig(ctx, d.pool.Config().ConnConfig.Copy())
	if err != nil {
		return memberSession{}, false, fmt.Errorf("connect: %w", err)
	}
	closeConn := func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1::int, $2::int)`, int32(lockNamespace), int32(member)).Scan(&ok); err != nil {
		closeConn()
		return memberSession{}, false, err
	}
	if !ok {
		closeConn()
		return memberSession{}, false, nil
	}
	if _, err := conn.Exec(ctx, `LISTEN `+leaseChannel); err != nil {
		closeConn()
		return memberSession{}, false, fmt.Errorf("listen: %w", err)
	}
	lost, wake := make(chan struct{}), make(chan struct{}, 1)
	wctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	self := leasePayload(projection, member)
	go func() {
		defer close(done)
		defer close(lost)
		for {
			nctx, cancel := context.WithTimeout(wctx, time.Second)
			n, err := conn.WaitForNotification(nctx)
			cancel()
			switch {
			case wctx.Err() != nil:
				return
			case err == nil:
				if n.Payload != self && strings.HasPrefix(n.Payload, projection+" ") {
					select {
					case wake <- struct{}{}:
					default: // a check is due already
					}
				}
				continue
			case pgconn.Timeout(err):
				// A quiet second: make sure the session still answers.
				pctx, cancel := context.WithTimeout(wctx, 2*time.Second)
				err = conn.Ping(pctx)
				cancel()
				if err == nil || wctx.Err() != nil {
					continue
				}
			}
			return // the session is broken: lost
		}
	}()
	var once sync.Once
	release := func() {
		once.Do(func() {
			stop()
			<-done
			closeConn()
		})
	}
	return memberSession{lost: lost, wake: wake, release: release}, true, nil
}

package mysql

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/esflow/esflow/pkg/eventstore"
	mysqlstore "github.com/esflow/esflow/pkg/eventstore/mysql"
	"github.com/esflow/esflow/pkg/outbox"
)

// DefaultTable is the default outbox table name.
const DefaultTable = "esflow_outbox"

// Defaults for the [Config] durations.
const (
	DefaultLockRetry    = 250 * time.Millisecond
	DefaultPingInterval = time.Second
	// DefaultWakePollInterval is how often a Wake channel looks for rows
	// committed by other processes.
	DefaultWakePollInterval = 20 * time.Millisecond
)

// maxCachedDeleteIDs is the largest id list whose DELETE stays prepared.
const maxCachedDeleteIDs = 512

// Config configures an [Outbox]. The zero value is usable.
type Config struct {
	// OutboxTable names the outbox table (default [DefaultTable]). It
	// must match ^[a-z_][a-z0-9_]{0,47}$ and differ from the event
	// store's tables.
	OutboxTable string
	// LockRetry is how often [Outbox.Lock] retries a held shard (default
	// [DefaultLockRetry]); PingInterval how often a holder checks that
	// its lock is still its own (default [DefaultPingInterval]).
	LockRetry, PingInterval time.Duration
	// WakePollInterval is how often each [Outbox.Wake] channel checks
	// for rows committed through other connections (default
	// [DefaultWakePollInterval]).
	WakePollInterval time.Duration
}

var identifier = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,47}$`)

// delegated is the part of the event store's API that Outbox serves by
// delegating to it. Embedding the store itself would also promote its
// Close and Migrate, which mean something else on the outbox.
type delegated interface {
	eventstore.Recorder
	eventstore.SnapshotRecorder
}

// Outbox is a MariaDB/MySQL transactional outbox over a
// [mysqlstore.Store]. It is safe for concurrent use.
type Outbox struct {
	events *mysqlstore.Store
	// delegated is events: the outbox is an eventstore.Recorder and
	// SnapshotRecorder through it (Append, ReadStream, ReadNotifications,
	// MaxNotificationID, SaveSnapshot, LatestSnapshot).
	delegated
	db    *sql.DB
	table string
	retry time.Duration
	ping  time.Duration
	// wakePoll is Config.WakePollInterval.
	wakePoll time.Duration
	q        queries

	subsMu sync.Mutex
	subs   map[chan struct{}]struct{}
}

type queries struct {
	insertHead, fetch, backlog, parked, park, deleteHead, maxID string
}

var (
	_ eventstore.OutboxRecorder   = (*Outbox)(nil)
	_ eventstore.SnapshotRecorder = (*Outbox)(nil)
	_ outbox.Source               = (*Outbox)(nil)
	_ outbox.Locker               = (*Outbox)(nil)
	_ outbox.Waker                = (*Outbox)(nil)
)

// New returns an outbox in the database of events. It does not touch the
// database: call [Outbox.Migrate].
func New(events *mysqlstore.Store, cfg Config) (*Outbox, error) {
	if events == nil {
		return nil, errors.New("outbox/mysql: nil event store")
	}
	if cfg.OutboxTable == "" {
		cfg.OutboxTable = DefaultTable
	}
	if !identifier.MatchString(cfg.OutboxTable) {
		return nil, fmt.Errorf("outbox/mysql: %w: outbox table %q (want [a-z_][a-z0-9_]*, at most 48 bytes)", eventstore.ErrInvalidIdentifier, cfg.OutboxTable)
	}
	s := events.Schema()
	switch cfg.OutboxTable {
	case s.Table, s.SnapshotTable, mysqlstore.MigrationsTable, mysqlstore.CountersTable:
		return nil, fmt.Errorf("outbox/mysql: %w: %q is an event store table", eventstore.ErrInvalidIdentifier, cfg.OutboxTable)
	}
	if cfg.LockRetry <= 0 {
		cfg.LockRetry = DefaultLockRetry
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = DefaultPingInterval
	}
	if cfg.WakePollInterval <= 0 {
		cfg.WakePollInterval = DefaultWakePollInterval
	}
	o := &Outbox{
		events: events, delegated: events, db: events.DB(), table: cfg.OutboxTable,
		retry: cfg.LockRetry, ping: cfg.PingInterval, wakePoll: cfg.WakePollInterval,
		subs: map[chan struct{}]struct{}{},
	}
	ob := mysqlstore.Quote(o.table)
	// (count, count, index): count <= 1 selects the whole outbox.
	shard := `parked_at IS NULL AND (? <= 1 OR key_hash % ? = ?)`
	o.q = queries{
		insertHead: `INSERT INTO ` + ob + " (topic, `key`, value, headers, key_hash, created_at) VALUES ",
		fetch:      `SELECT id, topic, ` + "`key`" + `, value, headers, created_at FROM ` + ob + ` WHERE ` + shard + ` ORDER BY id LIMIT ?`,
		backlog:    `SELECT count(*), min(created_at) FROM ` + ob + ` WHERE ` + shard,
		parked:     `SELECT count(*) FROM ` + ob + ` WHERE parked_at IS NOT NULL AND (? <= 1 OR key_hash % ? = ?)`,
		park:       `UPDATE ` + ob + ` SET parked_at = UTC_TIMESTAMP(6), park_reason = ? WHERE id = ?`,
		deleteHead: `DELETE FROM ` + ob + ` WHERE id IN (`,
		maxID:      `SELECT COALESCE(MAX(id), 0) FROM ` + ob,
	}
	return o, nil
}

// Events returns the wrapped event store.
func (o *Outbox) Events() *mysqlstore.Store { return o.events }

// Table returns the outbox table name.
func (o *Outbox) Table() string { return o.table }

// Close exists for symmetry: the wrapped store stays open (its owner
// closes it); Wake channels end with their contexts.
func (o *Outbox) Close() error { return nil }

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrate runs the event store's migrations, then creates or upgrades the
// outbox table, recording its versions in the event store's migrations
// table under the outbox table's name. It is idempotent and safe to run
// concurrently.
func (o *Outbox) Migrate(ctx context.Context) error {
	if err := o.events.Migrate(ctx); err != nil {
		return fmt.Errorf("outbox/mysql: migrate event store: %w", err)
	}
	n := struct{ Table, FetchIndex string }{mysqlstore.Quote(o.table), mysqlstore.Quote(o.table + "_fetch_idx")}
	if err := mysqlstore.ApplyMigrations(ctx, o.db, migrationFiles, "migrations", o.table, n); err != nil {
		return fmt.Errorf("outbox/mysql: migrate: %w", err)
	}
	return nil
}

// AppendWithOutbox implements [eventstore.OutboxRecorder]: one transaction
// holds the records ([mysqlstore.Store.AppendTx]) and the messages (one
// multi-row INSERT); a conflict (an error matching
// [eventstore.ErrConcurrency]) rolls back both. A message without a topic
// is refused with an error matching [outbox.ErrUnroutable]. Wake channels
// of this Outbox are signalled after the commit.
func (o *Outbox) AppendWithOutbox(ctx context.Context, records []eventstore.Record, msgs []outbox.Message) error {
	if err := eventstore.ValidateBatch(records); err != nil {
		return err
	}
	if len(records) == 0 && len(msgs) == 0 {
		return nil
	}
	args := make([]any, 0, 5*len(msgs))
	for i, m := range msgs {
		if m.Topic == "" {
			return fmt.Errorf("outbox/mysql: append: %w: message %d has no topic", outbox.ErrUnroutable, i)
		}
		hdr, err := outbox.EncodeHeaders(m.Headers)
		if err != nil {
			return fmt.Errorf("outbox/mysql: append: message %d: %w", i, err)
		}
		args = append(args, m.Topic, m.Key, m.Value, hdr, outbox.KeyHash(m.Key))
	}
	tx, err := o.events.BeginTx(ctx)
	if err != nil {
		return fmt.Errorf("outbox/mysql: append: %w", mysqlstore.TranslateError(err))
	}
	defer func() { _ = tx.Rollback() }()
	if err := o.events.AppendTx(ctx, tx, records); err != nil {
		return err
	}
	if len(msgs) > 0 {
		st, err := o.events.Stmt(ctx, tx, o.insertSQL(len(msgs)))
		if err != nil {
			return fmt.Errorf("outbox/mysql: append: %w", mysqlstore.TranslateError(err))
		}
		if _, err := st.ExecContext(ctx, args...); err != nil {
			return fmt.Errorf("outbox/mysql: append messages: %w", mysqlstore.TranslateError(err))
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("outbox/mysql: append: commit: %w", mysqlstore.TranslateError(err))
	}
	if len(msgs) > 0 {
		o.signal()
	}
	return nil
}

// insertSQL is the multi-row INSERT of n messages. Every row of one
// statement gets the same created_at.
func (o *Outbox) insertSQL(n int) string {
	var b strings.Builder
	b.WriteString(o.q.insertHead)
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(?, ?, ?, ?, ?, UTC_TIMESTAMP(6))")
	}
	return b.String()
}

func validShard(shard outbox.Shard) error {
	if !shard.Valid() {
		return fmt.Errorf("outbox/mysql: invalid shard %d/%d", shard.Index, shard.Count)
	}
	return nil
}

// shardArgs are the (count, count, index) arguments of the shard filter.
func shardArgs(shard outbox.Shard) []any {
	if shard.Count <= 1 {
		return []any{1, 1, 0}
	}
	return []any{shard.Count, shard.Count, shard.Index}
}

// Fetch implements [outbox.Source]: up to limit unparked messages of the
// shard, in id order.
func (o *Outbox) Fetch(ctx context.Context, shard outbox.Shard, limit int) ([]outbox.Message, error) {
	if err := validShard(shard); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, fmt.Errorf("outbox/mysql: fetch: limit %d must be positive", limit)
	}
	rows, err := o.query(ctx, o.q.fetch, append(shardArgs(shard), limit)...)
	if err != nil {
		return nil, fmt.Errorf("outbox/mysql: fetch: %w", mysqlstore.TranslateError(err))
	}
	defer func() { _ = rows.Close() }()
	var out []outbox.Message
	for rows.Next() {
		var m outbox.Message
		var hdr []byte
		if err := rows.Scan(&m.ID, &m.Topic, &m.Key, &m.Value, &hdr, &m.CreatedAt); err != nil {
			return nil, fmt.Errorf("outbox/mysql: fetch: %w", mysqlstore.TranslateError(err))
		}
		if m.Headers, err = outbox.DecodeHeaders(hdr); err != nil {
			return nil, fmt.Errorf("outbox/mysql: fetch message %d: %w", m.ID, mysqlstore.TranslateError(err))
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("outbox/mysql: fetch: %w", mysqlstore.TranslateError(err))
	}
	return out, nil
}

// Delete implements [outbox.Source]. Unknown ids are ignored. The id
// list is padded to a power of two by repeating its last id, so a few
// statement shapes stay prepared whatever the batch size.
func (o *Outbox) Delete(ctx context.Context, ids []int64) error {
	for len(ids) > 0 {
		n := min(len(ids), maxCachedDeleteIDs)
		size := 1
		for size < n {
			size *= 2
		}
		var b strings.Builder
		b.WriteString(o.q.deleteHead)
		args := make([]any, size)
		for i := range size {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("?")
			args[i] = ids[min(i, n-1)]
		}
		b.WriteString(")")
		if _, err := o.exec(ctx, b.String(), args...); err != nil {
			return fmt.Errorf("outbox/mysql: delete: %w", mysqlstore.TranslateError(err))
		}
		ids = ids[n:]
	}
	return nil
}

// Backlog implements [outbox.Source]. Parked messages are not counted
// (see [Outbox.Parked]).
func (o *Outbox) Backlog(ctx context.Context, shard outbox.Shard) (outbox.Backlog, error) {
	if err := validShard(shard); err != nil {
		return outbox.Backlog{}, err
	}
	var b outbox.Backlog
	var oldest sql.NullTime
	if err := o.queryRow(ctx, o.q.backlog, shardArgs(shard), &b.Messages, &oldest); err != nil {
		return outbox.Backlog{}, fmt.Errorf("outbox/mysql: backlog: %w", mysqlstore.TranslateError(err))
	}
	if oldest.Valid {
		b.Oldest = oldest.Time
	}
	return b, nil
}

// Parked counts the shard's parked messages.
func (o *Outbox) Parked(ctx context.Context, shard outbox.Shard) (int64, error) {
	if err := validShard(shard); err != nil {
		return 0, err
	}
	var n int64
	if err := o.queryRow(ctx, o.q.parked, shardArgs(shard), &n); err != nil {
		return 0, fmt.Errorf("outbox/mysql: parked: %w", mysqlstore.TranslateError(err))
	}
	return n, nil
}

// Park implements [outbox.Source]. An unknown id fails with an error
// matching [eventstore.ErrNotFound].
func (o *Outbox) Park(ctx context.Context, id int64, reason string) error {
	res, err := o.exec(ctx, o.q.park, reason, id)
	if err != nil {
		return fmt.Errorf("outbox/mysql: park message %d: %w", id, mysqlstore.TranslateError(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("outbox/mysql: park message %d: %w", id, mysqlstore.TranslateError(err))
	}
	if n == 0 {
		return fmt.Errorf("outbox/mysql: park message %d: %w", id, eventstore.ErrNotFound)
	}
	return nil
}

// query, queryRow and exec run prepared statements on the pool, through
// the event store's statement cache (one PREPARE per statement and
// connection instead of one per call).
func (o *Outbox) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return o.events.QueryContext(ctx, query, args...)
}

func (o *Outbox) queryRow(ctx context.Context, query string, args []any, dest ...any) error {
	rows, err := o.events.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer func() { _ = rows.Close() }()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return err
		}
		return sql.ErrNoRows
	}
	if err := rows.Scan(dest...); err != nil {
		return err
	}
	return rows.Close()
}

func (o *Outbox) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return o.events.ExecContext(ctx, query, args...)
}

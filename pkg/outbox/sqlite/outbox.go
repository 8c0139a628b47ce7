package sqlite

import (
	"github.com/esflow/esflow/internal/migrate"

	"context"
	"crypto/rand"
	"database/sql"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/esflow/esflow/pkg/eventstore"
	sqlstore "github.com/esflow/esflow/pkg/eventstore/sqlite"
	"github.com/esflow/esflow/pkg/outbox"
)

// DefaultTable is the default outbox table name.
const DefaultTable = "esflow_outbox"

// Defaults for the [Config] durations.
const (
	DefaultLeaseDuration = 5 * time.Second
	DefaultRenewInterval = time.Second
	DefaultLockRetry     = 250 * time.Millisecond
)

// MigrationsTable is the table, shared with the event store, in which
// applied migrations are recorded, keyed by the outbox table name.
const MigrationsTable = sqlstore.MigrationsTable

// timeLayout is fixed width, so stored times sort as text.
const timeLayout = "2006-01-02T15:04:05.000000000Z"

// Config configures an [Outbox]. The zero value is usable.
type Config struct {
	// OutboxTable names the outbox table (default [DefaultTable]); the
	// lease table is OutboxTable + "_leases". It must match
	// ^[a-z_][a-z0-9_]{0,47}$ and differ from the event store's tables.
	OutboxTable string
	// LeaseDuration, RenewInterval and LockRetry tune [Outbox.Lock]
	// (defaults [DefaultLeaseDuration], [DefaultRenewInterval],
	// [DefaultLockRetry]). RenewInterval must be well below
	// LeaseDuration.
	LeaseDuration, RenewInterval, LockRetry time.Duration
}

var identifier = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,47}$`)

// delegated is the part of the event store's API that Outbox serves by
// delegating to it. Embedding the store itself would also promote its
// Close and Migrate, which mean something else on the outbox.
type delegated interface {
	eventstore.Recorder
	eventstore.SnapshotRecorder
}

// Outbox is a SQLite transactional outbox over a [sqlstore.Store]. It is
// safe for concurrent use.
type Outbox struct {
	events *sqlstore.Store
	// delegated is events: the outbox is an eventstore.Recorder and
	// SnapshotRecorder through it (Append, ReadStream, ReadNotifications,
	// MaxNotificationID, SaveSnapshot, LatestSnapshot).
	delegated
	db     *sql.DB
	table  string
	leases string
	lease  time.Duration
	renew  time.Duration
	retry  time.Duration
	q      queries

	// writeSlot serialises this Outbox's write transactions in Go, so
	// in-process writers queue here instead of in SQLite's busy handler.
	writeSlot chan struct{}

	subsMu sync.Mutex
	subs   map[chan struct{}]struct{}
}

type queries struct {
	insert, fetch, del, backlog, parked, park string
	take, renew, release                      string
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
func New(events *sqlstore.Store, cfg Config) (*Outbox, error) {
	if events == nil {
		return nil, errors.New("outbox/sqlite: nil event store")
	}
	if cfg.OutboxTable == "" {
		cfg.OutboxTable = DefaultTable
	}
	if !identifier.MatchString(cfg.OutboxTable) {
		return nil, fmt.Errorf("outbox/sqlite: %w: outbox table %q (want [a-z_][a-z0-9_]*, at most 48 bytes)", eventstore.ErrInvalidIdentifier, cfg.OutboxTable)
	}
	leases := cfg.OutboxTable + "_leases"
	s := events.Schema()
	for _, t := range []string{cfg.OutboxTable, leases} {
		if t == s.Table || t == s.SnapshotTable {
			return nil, fmt.Errorf("outbox/sqlite: %w: %q is an event store table", eventstore.ErrInvalidIdentifier, t)
		}
	}
	if cfg.LeaseDuration <= 0 {
		cfg.LeaseDuration = DefaultLeaseDuration
	}
	if cfg.RenewInterval <= 0 {
		cfg.RenewInterval = DefaultRenewInterval
	}
	if cfg.LockRetry <= 0 {
		cfg.LockRetry = DefaultLockRetry
	}
	if cfg.RenewInterval >= cfg.LeaseDuration {
		return nil, fmt.Errorf("outbox/sqlite: RenewInterval %v must be shorter than LeaseDuration %v", cfg.RenewInterval, cfg.LeaseDuration)
	}
	o := &Outbox{
		events: events, delegated: events, db: events.DB(), table: cfg.OutboxTable, leases: leases,
		lease: cfg.LeaseDuration, renew: cfg.RenewInterval, retry: cfg.LockRetry,
		writeSlot: make(chan struct{}, 1),
		subs:      map[chan struct{}]struct{}{},
	}
	ob, lt := eventstore.Quote(o.table), eventstore.Quote(leases)
	shard := `parked_at IS NULL AND (?1 <= 1 OR key_hash % ?1 = ?2)`
	o.q = queries{
		insert:  `INSERT INTO ` + ob + ` (topic, key, value, headers, key_hash, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
		fetch:   `SELECT id, topic, key, value, headers, created_at FROM ` + ob + ` WHERE ` + shard + ` ORDER BY id LIMIT ?3`,
		backlog: `SELECT count(*), min(created_at) FROM ` + ob + ` WHERE ` + shard,
		parked:  `SELECT count(*) FROM ` + ob + ` WHERE parked_at IS NOT NULL AND (?1 <= 1 OR key_hash % ?1 = ?2)`,
		park:    `UPDATE ` + ob + ` SET parked_at = ?, park_reason = ? WHERE id = ?`,
		del:     `DELETE FROM ` + ob + ` WHERE id IN (SELECT value FROM json_each(?))`,
		take: `INSERT INTO ` + lt + ` (shard, holder, expires_at) VALUES (?1, ?2, ?3)
ON CONFLICT (shard) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE ` + lt + `.holder = excluded.holder OR ` + lt + `.expires_at < ?4`,
		renew:   `UPDATE ` + lt + ` SET expires_at = ?1 WHERE shard = ?2 AND holder = ?3`,
		release: `DELETE FROM ` + lt + ` WHERE shard = ?1 AND holder = ?2`,
	}
	return o, nil
}

// Events returns the wrapped event store.
func (o *Outbox) Events() *sqlstore.Store { return o.events }

// Table returns the outbox table name.
func (o *Outbox) Table() string { return o.table }

// Close releases nothing but exists for symmetry: the wrapped store stays
// open (its owner closes it); Wake channels end with their contexts.
func (o *Outbox) Close() error { return nil }

//go:embed migrations/*.sql
var migrationFiles embed.FS

func loadMigrations() ([]migrate.Migration, error) {
	return migrate.Load(migrationFiles, "migrations")
}

// Migrate runs the event store's migrations, then creates or upgrades the
// outbox and lease tables in one write transaction, recording each
// version in [MigrationsTable] under the outbox table's name. It is
// idempotent.
func (o *Outbox) Migrate(ctx context.Context) error {
	if err := o.events.Migrate(ctx); err != nil {
		return fmt.Errorf("outbox/sqlite: migrate event store: %w", err)
	}
	ms, err := loadMigrations()
	if err != nil {
		return fmt.Errorf("outbox/sqlite: migrate: %w", err)
	}
	n := struct{ Table, LeaseTable string }{eventstore.Quote(o.table), eventstore.Quote(o.leases)}
	tx, err := o.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("outbox/sqlite: migrate: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	mt := eventstore.Quote(MigrationsTable)
	rows, err := tx.QueryContext(ctx, `SELECT version FROM `+mt+` WHERE table_name = ?`, o.table)
	if err != nil {
		return fmt.Errorf("outbox/sqlite: migrate: read applied versions: %w", err)
	}
	applied := map[int]bool{}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			_ = rows.Close()
			return fmt.Errorf("outbox/sqlite: migrate: read applied versions: %w", err)
		}
		applied[v] = true
	}
	if err := rows.Close(); err != nil {
		return fmt.Errorf("outbox/sqlite: migrate: read applied versions: %w", err)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("outbox/sqlite: migrate: read applied versions: %w", err)
	}
	for _, m := range ms {
		if applied[m.Version] {
			continue
		}
		var b strings.Builder
		if err := m.Template.Execute(&b, n); err != nil {
			return fmt.Errorf("outbox/sqlite: migrate.Migration %s: %w", m.Name, err)
		}
		if _, err := tx.ExecContext(ctx, b.String()); err != nil {
			return fmt.Errorf("outbox/sqlite: migrate.Migration %s: %w", m.Name, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO `+mt+` (table_name, version) VALUES (?, ?)`, o.table, m.Version); err != nil {
			return fmt.Errorf("outbox/sqlite: record migrate.Migration %s: %w", m.Name, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("outbox/sqlite: migrate: commit: %w", err)
	}
	return nil
}

// AppendWithOutbox implements [eventstore.OutboxRecorder]: one write
// transaction holds the records ([sqlstore.Store.AppendTx]) and the
// messages; a conflict (an error matching [eventstore.ErrConcurrency])
// rolls back both. A message without a topic is refused with an error
// matching [outbox.ErrUnroutable]. Wake channels are signalled after the
// commit.
func (o *Outbox) AppendWithOutbox(ctx context.Context, records []eventstore.Record, msgs []outbox.Message) error {
	if err := eventstore.ValidateBatch(records); err != nil {
		return err
	}
	if len(records) == 0 && len(msgs) == 0 {
		return nil
	}
	hdrs := make([][]byte, len(msgs))
	for i, m := range msgs {
		if m.Topic == "" {
			return fmt.Errorf("outbox/sqlite: append: %w: message %d has no topic", outbox.ErrUnroutable, i)
		}
		var err error
		if hdrs[i], err = outbox.EncodeHeaders(m.Headers); err != nil {
			return fmt.Errorf("outbox/sqlite: append: message %d: %w", i, err)
		}
	}
	select {
	case o.writeSlot <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("outbox/sqlite: append: %w", ctx.Err())
	}
	err := o.appendTx(ctx, records, msgs, hdrs)
	<-o.writeSlot
	if err != nil {
		return err
	}
	if len(msgs) > 0 {
		o.signal()
	}
	return nil
}

func (o *Outbox) appendTx(ctx context.Context, records []eventstore.Record, msgs []outbox.Message, hdrs [][]byte) error {
	tx, err := o.events.BeginTx(ctx)
	if err != nil {
		return fmt.Errorf("outbox/sqlite: append: %w", sqlstore.TranslateError(err))
	}
	defer func() { _ = tx.Rollback() }()
	if err := o.events.AppendTx(ctx, tx, records); err != nil {
		return err
	}
	if len(msgs) > 0 {
		stmt, err := tx.PrepareContext(ctx, o.q.insert)
		if err != nil {
			return fmt.Errorf("outbox/sqlite: append: prepare: %w", sqlstore.TranslateError(err))
		}
		defer func() { _ = stmt.Close() }()
		now := time.Now().UTC().Format(timeLayout)
		for i, m := range msgs {
			if _, err := stmt.ExecContext(ctx, m.Topic, m.Key, m.Value, hdrs[i], outbox.KeyHash(m.Key), now); err != nil {
				return fmt.Errorf("outbox/sqlite: append message %d: %w", i, err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("outbox/sqlite: append: commit: %w", sqlstore.TranslateError(err))
	}
	return nil
}

func validShard(shard outbox.Shard) error {
	if !shard.Valid() {
		return fmt.Errorf("outbox/sqlite: invalid shard %d/%d", shard.Index, shard.Count)
	}
	return nil
}

func shardArgs(shard outbox.Shard) (int, int) {
	if shard.Count <= 1 {
		return 1, 0
	}
	return shard.Count, shard.Index
}

// Fetch implements [outbox.Source]: up to limit unparked messages of the
// shard, in id order.
func (o *Outbox) Fetch(ctx context.Context, shard outbox.Shard, limit int) ([]outbox.Message, error) {
	if err := validShard(shard); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, fmt.Errorf("outbox/sqlite: fetch: limit %d must be positive", limit)
	}
	count, index := shardArgs(shard)
	rows, err := o.db.QueryContext(ctx, o.q.fetch, count, index, limit)
	if err != nil {
		return nil, fmt.Errorf("outbox/sqlite: fetch: %w", sqlstore.TranslateError(err))
	}
	defer func() { _ = rows.Close() }()
	var out []outbox.Message
	for rows.Next() {
		var m outbox.Message
		var hdr []byte
		var created string
		if err := rows.Scan(&m.ID, &m.Topic, &m.Key, &m.Value, &hdr, &created); err != nil {
			return nil, fmt.Errorf("outbox/sqlite: fetch: %w", sqlstore.TranslateError(err))
		}
		if m.Headers, err = outbox.DecodeHeaders(hdr); err != nil {
			return nil, fmt.Errorf("outbox/sqlite: fetch message %d: %w", m.ID, sqlstore.TranslateError(err))
		}
		if m.CreatedAt, err = time.Parse(timeLayout, created); err != nil {
			return nil, fmt.Errorf("outbox/sqlite: fetch message %d: created_at: %w", m.ID, sqlstore.TranslateError(err))
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("outbox/sqlite: fetch: %w", sqlstore.TranslateError(err))
	}
	return out, nil
}

// Delete implements [outbox.Source]. Unknown ids are ignored.
func (o *Outbox) Delete(ctx context.Context, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	list, err := json.Marshal(ids)
	if err != nil {
		return fmt.Errorf("outbox/sqlite: delete: %w", sqlstore.TranslateError(err))
	}
	if _, err := o.db.ExecContext(ctx, o.q.del, string(list)); err != nil {
		return fmt.Errorf("outbox/sqlite: delete: %w", sqlstore.TranslateError(err))
	}
	return nil
}

// Backlog implements [outbox.Source]. Parked messages are not counted
// (see [Outbox.Parked]).
func (o *Outbox) Backlog(ctx context.Context, shard outbox.Shard) (outbox.Backlog, error) {
	if err := validShard(shard); err != nil {
		return outbox.Backlog{}, err
	}
	count, index := shardArgs(shard)
	var b outbox.Backlog
	var oldest sql.NullString
	if err := o.db.QueryRowContext(ctx, o.q.backlog, count, index).Scan(&b.Messages, &oldest); err != nil {
		return outbox.Backlog{}, fmt.Errorf("outbox/sqlite: backlog: %w", sqlstore.TranslateError(err))
	}
	if oldest.Valid {
		t, err := time.Parse(timeLayout, oldest.String)
		if err != nil {
			return outbox.Backlog{}, fmt.Errorf("outbox/sqlite: backlog: created_at: %w", sqlstore.TranslateError(err))
		}
		b.Oldest = t
	}
	return b, nil
}

// Parked counts the shard's parked messages.
func (o *Outbox) Parked(ctx context.Context, shard outbox.Shard) (int64, error) {
	if err := validShard(shard); err != nil {
		return 0, err
	}
	count, index := shardArgs(shard)
	var n int64
	if err := o.db.QueryRowContext(ctx, o.q.parked, count, index).Scan(&n); err != nil {
		return 0, fmt.Errorf("outbox/sqlite: parked: %w", sqlstore.TranslateError(err))
	}
	return n, nil
}

// Park implements [outbox.Source]. An unknown id fails with an error
// matching [eventstore.ErrNotFound].
func (o *Outbox) Park(ctx context.Context, id int64, reason string) error {
	res, err := o.db.ExecContext(ctx, o.q.park, time.Now().UTC().Format(timeLayout), reason, id)
	if err != nil {
		return fmt.Errorf("outbox/sqlite: park message %d: %w", id, sqlstore.TranslateError(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("outbox/sqlite: park message %d: %w", id, sqlstore.TranslateError(err))
	}
	if n == 0 {
		return fmt.Errorf("outbox/sqlite: park message %d: %w", id, eventstore.ErrNotFound)
	}
	return nil
}

func newHolder() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

package postgres

import (
	"github.com/esflow/esflow/internal/migrate"

	"cmp"
	"context"
	"embed"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/esflow/esflow/pkg/eventstore"
)

// Defaults of [Config].
const (
	DefaultSequencerBatch    = 100_000
	DefaultSequencerPoll     = 50 * time.Millisecond
	DefaultSequencerDelay    = 20 * time.Millisecond
	DefaultSequencerTakeover = 500 * time.Millisecond
	DefaultReadWait          = 2 * time.Second
)

// MigrationsTable records which migrations were applied to which events
// table (one row per table and version).
const MigrationsTable = "esflow_schema_migrations"

// Config configures a [Store]. The zero value is usable.
type Config struct {
	// Schema names the events table, its columns and the snapshot table.
	// The zero value means [eventstore.DefaultSchema]; empty fields take
	// their defaults. Names are validated (see [eventstore.Schema.Validate])
	// before any SQL is built.
	Schema eventstore.Schema

	// SequencerBatch caps how many records one sequencer step numbers
	// (see NOTIFICATIONS.md). A transaction is never split: a step takes
	// whole transactions, at least one. Zero means [DefaultSequencerBatch].
	SequencerBatch int

	// SequencerPoll is how often the active sequencer looks for commits
	// it was not told about (appends of other processes, or AppendTx
	// commits not reported with [Store.Committed]). This store's own
	// Append wakes it at once. Zero means [DefaultSequencerPoll].
	SequencerPoll time.Duration

	// SequencerDelay paces the steps that commits wake: a step starts no
	// sooner than this after the previous one began, so that a stream of
	// commits is numbered in shared steps (each step that numbers costs
	// a commit, hence a WAL flush). A reader waiting for its records
	// does not wait for the pacing. Zero means [DefaultSequencerDelay];
	// negative means no pacing.
	SequencerDelay time.Duration

	// SequencerTakeover is how often a standby sequencer tries to take
	// the table's sequencer lock, so the longest a table goes unnumbered
	// after its active sequencer's process dies (its session ends with
	// it, and the lock with the session). Zero means
	// [DefaultSequencerTakeover].
	SequencerTakeover time.Duration

	// NoSequencer keeps this store from numbering: it only reads, and
	// some other process that writes to the table numbers. By default a
	// store starts its sequencer with its first Migrate, Append, AppendTx,
	// Committed or Sequence call.
	NoSequencer bool

	// ReadWait bounds how long ReadNotifications and MaxNotificationID
	// wait for records committed before the call to be numbered. After
	// it they return what is numbered. Zero means [DefaultReadWait];
	// negative means they never wait.
	ReadWait time.Duration

	// Hooks observe the sequencer. Nil means [NoHooks].
	Hooks Hooks
}

// Store is a PostgreSQL [eventstore.Recorder] and
// [eventstore.SnapshotRecorder]. It is safe for concurrent use.
type Store struct {
	pool   *pgxpool.Pool
	owned  bool
	closed atomic.Bool
	schema eventstore.Schema
	names  names
	cfg    Config // defaults filled in

	seqOnce sync.Once
	seq     atomic.Pointer[sequencer] // nil until started, and with NoSequencer
	// baseline is the newest sequencer baseline this store saw, as
	// pg_snapshot text; readers' pending checks start from it.
	baseline atomic.Pointer[snapshot]
	// maxKnown is the highest notification id this store saw assigned.
	maxKnown atomic.Uint64

	insertSQL      string
	conflictSQL    string
	lockSQL        string
	stepSQL        string
	pendingSQL     string
	baselineSQL    string
	notifSQL       string
	notifTopicsSQL string
	maxNotifSQL    string
	saveSnapSQL    string
	latestSnapSQL  string
}

// names holds the validated, quoted identifiers SQL is built from.
type names struct {
	Table, SnapshotTable            string
	StreamID, Position, Topic, Data string
	StreamKey, NotificationIndex    string
	PendingIndex                    string
	// Since migration 3: the notification log and the sequencer's state.
	Notifications, NotificationsKey string
	NotificationsSeqKey             string
	SequencerState, TxIndex         string
	rawTable, rawStreamKey          string
}

var _ eventstore.Recorder = (*Store)(nil)
var _ eventstore.SnapshotRecorder = (*Store)(nil)

// New returns a Store using pool, which stays owned by the caller ([Store.Close]
// does not close it). It fails with an error matching
// [eventstore.ErrInvalidIdentifier] when cfg.Schema has an invalid name.
// New does not touch the database: call [Store.Migrate] to create tables.
func New(pool *pgxpool.Pool, cfg Config) (*Store, error) {
	if pool == nil {
		return nil, &eventstore.Error{Op: "new", Err: errors.New("nil pool")}
	}
	schema := cfg.Schema.WithDefaults()
	if err := schema.Validate(); err != nil {
		return nil, &eventstore.Error{Op: "new", Err: err}
	}
	if cfg.SequencerBatch < 0 || cfg.SequencerPoll < 0 || cfg.SequencerTakeover < 0 {
		return nil, &eventstore.Error{Op: "new", Err: fmt.Errorf("negative sequencer setting (batch %d, poll %v, takeover %v)",
			cfg.SequencerBatch, cfg.SequencerPoll, cfg.SequencerTakeover)}
	}
	cfg.Schema = schema
	cfg.SequencerBatch = cmp.Or(cfg.SequencerBatch, DefaultSequencerBatch)
	cfg.SequencerPoll = cmp.Or(cfg.SequencerPoll, DefaultSequencerPoll)
	cfg.SequencerTakeover = cmp.Or(cfg.SequencerTakeover, DefaultSequencerTakeover)
	cfg.SequencerDelay = cmp.Or(cfg.SequencerDelay, DefaultSequencerDelay)
	cfg.ReadWait = cmp.Or(cfg.ReadWait, DefaultReadWait)
	if cfg.Hooks == nil {
		cfg.Hooks = NoHooks{}
	}
	q := eventstore.Quote
	n := names{
		Table:             q(schema.Table),
		SnapshotTable:     q(schema.SnapshotTable),
		StreamID:          q(schema.StreamIDColumn),
		Position:          q(schema.PositionColumn),
		Topic:             q(schema.TopicColumn),
		Data:              q(schema.DataColumn),
		StreamKey:         q(schema.Table + "_stream_key"),
		NotificationIndex: q(schema.Table + "_nid_key"),
		PendingIndex:      q(schema.Table + "_pending_idx"),
		// Table names are at most 48 bytes (Schema.Validate), so these
		// stay within PostgreSQL's 63 and are never truncated.
		Notifications:       q(schema.Table + "_notifications"),
		NotificationsKey:    q(schema.Table + "_notifications_pk"),
		NotificationsSeqKey: q(schema.Table + "_notifications_seq"),
		SequencerState:      q(schema.Table + "_sequencer"),
		TxIndex:             q(schema.Table + "_tx_idx"),
		rawTable:            schema.Table,
		rawStreamKey:        schema.Table + "_stream_key",
	}
	s := &Store{
		pool:   pool,
		schema: schema,
		names:  n,
		cfg:    cfg,
	}
	s.buildSQL()
	return s, nil
}

// Open connects to dsn and returns a Store that owns the pool:
// [Store.Close] closes it.
func Open(ctx context.Context, dsn string, cfg Config) (*Store, error) {
	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, &eventstore.Error{Op: "open", Err: fmt.Errorf("parse connection string: %w", err)}
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, &eventstore.Error{Op: "open", Err: fmt.Errorf("create pool: %w", err)}
	}
	s, err := New(pool, cfg)
	if err != nil {
		pool.Close()
		return nil, err
	}
	s.owned = true
	return s, nil
}

// Close marks the store closed (later calls fail with
// [eventstore.ErrClosed]), stops its sequencer (which releases the
// table's sequencer lock to a standby) and closes the pool if the store
// opened it.
func (s *Store) Close() {
	if s.closed.Swap(true) {
		return
	}
	s.seqOnce.Do(func() {}) // no sequencer can start after this
	if q := s.seq.Load(); q != nil {
		q.stop()
	}
	if s.owned {
		s.pool.Close()
	}
}

// Pool returns the connection pool the store uses.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Schema returns the validated schema with defaults filled in.
func (s *Store) Schema() eventstore.Schema { return s.schema }

func (s *Store) checkOpen(op string) error {
	if s.closed.Load() {
		return &eventstore.Error{Op: op, Err: eventstore.ErrClosed}
	}
	return nil
}

// lockKey derives a stable advisory lock key from a name.
func lockKey(name string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(name))
	return int64(h.Sum64())
}

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrations lists the embedded migrations in version order.
func migrations() ([]migrate.Migration, error) {
	return migrate.Load(migrationFiles, "migrations")
}

var migrateLockKey = lockKey("esflow:migrate")

// Migrate creates or upgrades the events and snapshot tables. It is
// idempotent and safe to call concurrently (from many processes too): the
// migrations run in one transaction under an advisory lock, and each
// applied version is recorded in [MigrationsTable] for the events table.
func (s *Store) Migrate(ctx context.Context) error {
	return s.migrate(ctx, 0)
}

// migrate applies the migrations up to version upTo (0: all). Tests
// stop early to build a database as an older release left it.
func (s *Store) migrate(ctx context.Context, upTo int) error {
	const op = "migrate"
	if err := s.checkOpen(op); err != nil {
		return err
	}
	ms, err := migrations()
	if err != nil {
		return &eventstore.Error{Op: op, Err: err}
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLockKey); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+MigrationsTable+` (
    table_name text NOT NULL,
    version int NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, version)
)`); err != nil {
			return fmt.Errorf("create %s: %w", MigrationsTable, err)
		}
		rows, err := tx.Query(ctx, `SELECT version FROM `+MigrationsTable+` WHERE table_name = $1`, s.names.rawTable)
		if err != nil {
			return fmt.Errorf("read applied migrations: %w", err)
		}
		applied, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			return fmt.Errorf("read applied migrations: %w", err)
		}
		done := make(map[int]bool, len(applied))
		for _, v := range applied {
			done[int(v)] = true
		}
		for _, m := range ms {
			if done[m.Version] || (upTo > 0 && m.Version > upTo) {
				continue
			}
			var sql strings.Builder
			if err := m.Template.Execute(&sql, s.names); err != nil {
				return fmt.Errorf("render migrate.Migration %s: %w", m.Name, err)
			}
			if _, err := tx.Exec(ctx, sql.String()); err != nil {
				return fmt.Errorf("apply migrate.Migration %s: %w", m.Name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO `+MigrationsTable+` (table_name, version) VALUES ($1, $2)`, s.names.rawTable, m.Version); err != nil {
				return fmt.Errorf("record migrate.Migration %s: %w", m.Name, err)
			}
		}
		return nil
	})
	if err != nil {
		return &eventstore.Error{Op: op, Err: err}
	}
	if upTo == 0 {
		s.startSequencer()
	}
	return nil
}

// buildSQL prepares the statements from the quoted names.
func (s *Store) buildSQL() {
	n := s.names
	// One statement for the whole batch. A stream's first record is kept
	// only when it starts the stream or its predecessor exists, so an
	// append beyond the end inserts fewer rows than given; an append at
	// an existing position violates the stream key.
	//
	// The predecessor check is a scalar subquery, not EXISTS: PostgreSQL
	// may plan an EXISTS as a hashed subplan, which reads the whole events
	// table into a hash on every append (the generic plan of a fresh
	// table did). A scalar subquery is never hashed; it looks the one row
	// up in the stream key's index (TestInsertPlanUsesTheStreamIndex).
	s.insertSQL = `INSERT INTO ` + n.Table + ` (` + n.StreamID + `, ` + n.Position + `, ` + n.Topic + `, ` + n.Data + `)
SELECT r.sid, r.pos, r.topic, r.data
FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::bytea[], $5::bool[]) WITH ORDINALITY AS r(sid, pos, topic, data, first, ord)
WHERE NOT r.first OR r.pos = 0 OR (
    SELECT true FROM ` + n.Table + ` e WHERE e.` + n.StreamID + ` = r.sid AND e.` + n.Position + ` = r.pos - 1)
ORDER BY r.ord`
	// Which first records would be refused (used only to report a conflict).
	s.conflictSQL = `SELECT r.sid, r.pos
FROM unnest($1::uuid[], $2::bigint[]) WITH ORDINALITY AS r(sid, pos, ord)
WHERE r.pos > 0 AND (
    SELECT true FROM ` + n.Table + ` e WHERE e.` + n.StreamID + ` = r.sid AND e.` + n.Position + ` = r.pos - 1) IS NULL
ORDER BY r.ord
LIMIT 1`
	s.buildLogSQL()
	s.saveSnapSQL = `INSERT INTO ` + n.SnapshotTable + ` (` + n.StreamID + `, ` + n.Position + `, ` + n.Topic + `, ` + n.Data + `)
VALUES ($1, $2, $3, $4)
ON CONFLICT (` + n.StreamID + `, ` + n.Position + `) DO UPDATE
SET ` + n.Topic + ` = EXCLUDED.` + n.Topic + `, ` + n.Data + ` = EXCLUDED.` + n.Data
	s.latestSnapSQL = `SELECT ` + n.Position + `, ` + n.Topic + `, ` + n.Data + ` FROM ` + n.SnapshotTable + `
WHERE ` + n.StreamID + ` = $1 AND ` + n.Position + ` <= $2
ORDER BY ` + n.Position + ` DESC
LIMIT 1`
}

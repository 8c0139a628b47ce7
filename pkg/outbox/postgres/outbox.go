package postgres

import (
	"github.com/esflow/esflow/internal/migrate"

	"context"
	"embed"
	"errors"
	"fmt"
	"hash/fnv"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/esflow/esflow/pkg/eventstore"
	pgstore "github.com/esflow/esflow/pkg/eventstore/postgres"
	"github.com/esflow/esflow/pkg/outbox"
)

// DefaultTable is the default outbox table name.
const DefaultTable = "esflow_outbox"

// Defaults for the [Config] durations.
const (
	DefaultLockRetry      = 250 * time.Millisecond
	DefaultPingInterval   = time.Second
	DefaultNotifyInterval = time.Millisecond
	DefaultLease          = 3 * time.Second
)

// MigrationsTable is the table, shared with the event store, in which
// applied migrations are recorded, keyed by the outbox table name.
const MigrationsTable = pgstore.MigrationsTable

// Config configures an [Outbox]. The zero value is usable.
type Config struct {
	// OutboxTable names the outbox table (default [DefaultTable]). It must
	// match ^[a-z_][a-z0-9_]{0,47}$ and differ from the event store's
	// tables.
	OutboxTable string
	// Channel is the LISTEN/NOTIFY channel (default: OutboxTable), with
	// the same rules.
	Channel string
	// LockRetry is how often Lock retries a held shard (default
	// [DefaultLockRetry]).
	LockRetry time.Duration
	// PingInterval is how often a held lock's lease is renewed, which
	// also checks its connection (default [DefaultPingInterval], or a
	// third of Lease if that is shorter).
	PingInterval time.Duration
	// Lease is how long a shard's owner may go without renewing its lease
	// (default [DefaultLease]; at least 2×PingInterval). A holder sends
	// no produce request once Lease has passed since its last renewal was
	// sent, and PostgreSQL ends its lock session after Lease of silence
	// (idle_session_timeout, PostgreSQL 14+), so a paused holder loses
	// the shard; a successor starts publishing only once the previous
	// lease has expired. Failover after a crash therefore takes up to
	// Lease plus LockRetry. See the relay's DESIGN.md, "Fencing".
	Lease time.Duration
	// NotifyInterval is the least time between two NOTIFYs of this
	// Outbox (default [DefaultNotifyInterval]; negative: no gap). Commits
	// within it share one NOTIFY, sent when it has passed, so a wake-up
	// of a relay in another process is delayed by at most this much while
	// writers commit faster than one per interval, and not at all
	// otherwise. Relays in this process are woken at once regardless.
	NotifyInterval time.Duration

	// WAL selects the WAL mode, for PostgreSQL with wal_level=logical:
	// AppendWithOutbox emits each message as a transactional
	// logical-decoding message (pg_logical_emit_message) in the events'
	// transaction instead of inserting an outbox row, and relays read them
	// from a replication slot through [Outbox.WALSource]. Every writer and
	// relay of one outbox must agree. Default false: the outbox table.
	// See WAL.md.
	WAL bool
	// MessagePrefix is the prefix of the WAL mode's messages; relays skip
	// messages with other prefixes. Default: OutboxTable.
	MessagePrefix string
	// Slot and Publication name the WAL mode's replication slot and the
	// (empty) pgoutput publication it decodes with. Defaults: OutboxTable
	// + "_slot" and OutboxTable + "_pub". Same rules as OutboxTable.
	Slot, Publication string
}

var identifier = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,47}$`)

// ValidIdentifier reports an error matching
// [eventstore.ErrInvalidIdentifier] unless name is a plain lower-case SQL
// identifier of at most 48 bytes.
func ValidIdentifier(what, name string) error {
	if !identifier.MatchString(name) {
		return fmt.Errorf("%w: %s %q (want [a-z_][a-z0-9_]*, at most 48 bytes)", eventstore.ErrInvalidIdentifier, what, name)
	}
	return nil
}

// delegated is the part of the event store's API that Outbox serves by
// delegating to it. Embedding the store itself would also promote its
// Close and Migrate, which mean something else on the outbox.
type delegated interface {
	eventstore.Recorder
	eventstore.SnapshotRecorder
}

// Outbox is a PostgreSQL transactional outbox over a [pgstore.Store]. It
// implements [eventstore.OutboxRecorder], [eventstore.SnapshotRecorder],
// [outbox.Source], [outbox.Locker] and [outbox.Waker], and is safe for
// concurrent use.
type Outbox struct {
	events *pgstore.Store
	// delegated is events: the outbox is an eventstore.Recorder and
	// SnapshotRecorder through it (Append, ReadStream, ReadNotifications,
	// MaxNotificationID, SaveSnapshot, LatestSnapshot).
	delegated
	pool    *pgxpool.Pool
	schema  eventstore.Schema
	table   string // raw, validated
	channel string // raw, validated
	retry   time.Duration
	ping    time.Duration
	gap     time.Duration // between NOTIFYs, >= 0
	lease   time.Duration

	// WAL mode (Config.WAL); see wal.go.
	wal         bool
	prefix      string
	slot        string // raw, validated
	publication string // raw, validated
	wq          walQueries

	q  queries
	fq fetchQueries

	// notifier: a buffered(1) kick channel drained by one goroutine that
	// sends a NOTIFY per drained kick, so bursts coalesce.
	kick       chan struct{}
	notifyOnce sync.Once
	stop       chan struct{}
	stopOnce   sync.Once
	wg         sync.WaitGroup

	// notifierPID is the server process id of the notifier's own
	// connection (0 while there is none): Wake ignores the notifications
	// it sent, whose commits woke this Outbox's subscribers directly.
	notifierPID atomic.Uint32

	subsMu sync.Mutex
	subs   map[chan struct{}]struct{}
}

var (
	_ eventstore.OutboxRecorder   = (*Outbox)(nil)
	_ eventstore.SnapshotRecorder = (*Outbox)(nil)
	_ outbox.Source               = (*Outbox)(nil)
	_ outbox.Locker               = (*Outbox)(nil)
	_ outbox.FencedLocker         = (*Outbox)(nil)
	_ outbox.Waker                = (*Outbox)(nil)
)

// New returns an outbox writing to the database of events, in the table
// cfg.OutboxTable. It does not touch the database: call [Outbox.Migrate].
func New(events *pgstore.Store, cfg Config) (*Outbox, error) {
	if events == nil {
		return nil, errors.New("outbox/postgres: nil event store")
	}
	if cfg.OutboxTable == "" {
		cfg.OutboxTable = DefaultTable
	}
	if cfg.Channel == "" {
		cfg.Channel = cfg.OutboxTable
	}
	if err := ValidIdentifier("outbox table", cfg.OutboxTable); err != nil {
		return nil, fmt.Errorf("outbox/postgres: %w", err)
	}
	if err := ValidIdentifier("channel", cfg.Channel); err != nil {
		return nil, fmt.Errorf("outbox/postgres: %w", err)
	}
	schema := events.Schema()
	if cfg.OutboxTable == schema.Table || cfg.OutboxTable == schema.SnapshotTable {
		return nil, fmt.Errorf("outbox/postgres: %w: outbox table %q is an event store table", eventstore.ErrInvalidIdentifier, cfg.OutboxTable)
	}
	if cfg.MessagePrefix == "" {
		cfg.MessagePrefix = cfg.OutboxTable
	}
	if cfg.Slot == "" {
		cfg.Slot = cfg.OutboxTable + "_slot"
	}
	if cfg.Publication == "" {
		cfg.Publication = cfg.OutboxTable + "_pub"
	}
	if err := ValidIdentifier("replication slot", cfg.Slot); err != nil {
		return nil, fmt.Errorf("outbox/postgres: %w", err)
	}
	if err := ValidIdentifier("publication", cfg.Publication); err != nil {
		return nil, fmt.Errorf("outbox/postgres: %w", err)
	}
	if cfg.LockRetry <= 0 {
		cfg.LockRetry = DefaultLockRetry
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = DefaultPingInterval
		if cfg.Lease > 0 {
			cfg.PingInterval = min(DefaultPingInterval, cfg.Lease/3)
		}
	}
	if cfg.Lease <= 0 {
		cfg.Lease = max(DefaultLease, 2*cfg.PingInterval)
	}
	if cfg.Lease < 2*cfg.PingInterval {
		return nil, fmt.Errorf("outbox/postgres: Lease %s is shorter than twice PingInterval %s", cfg.Lease, cfg.PingInterval)
	}
	switch {
	case cfg.NotifyInterval == 0:
		cfg.NotifyInterval = DefaultNotifyInterval
	case cfg.NotifyInterval < 0:
		cfg.NotifyInterval = 0
	}
	o := &Outbox{
		events: events, delegated: events,
		pool:    events.Pool(),
		schema:  schema,
		table:   cfg.OutboxTable,
		channel: cfg.Channel,
		retry:   cfg.LockRetry,
		ping:    cfg.PingInterval,
		gap:     cfg.NotifyInterval,
		lease:   cfg.Lease,

		wal:         cfg.WAL,
		prefix:      cfg.MessagePrefix,
		slot:        cfg.Slot,
		publication: cfg.Publication,
		kick:        make(chan struct{}, 1),
		stop:        make(chan struct{}),
		subs:        map[chan struct{}]struct{}{},
	}
	o.q = buildQueries(schema, o.table)
	o.fq = buildFetchQueries(o.table)
	if o.wal {
		o.wq = buildWALQueries(schema, o.table)
	}
	return o, nil
}

// Events returns the wrapped event store.
func (o *Outbox) Events() *pgstore.Store { return o.events }

// Table returns the outbox table name.
func (o *Outbox) Table() string { return o.table }

// Channel returns the NOTIFY channel name.
func (o *Outbox) Channel() string { return o.channel }

// Close stops the notifier goroutine. It does not close the wrapped event
// store (nor its pool): the caller that opened it closes it, after the
// Outbox. Wake channels end with their own contexts. Close is idempotent.
func (o *Outbox) Close() {
	o.stopOnce.Do(func() { close(o.stop) })
	o.wg.Wait()
}

func (o *Outbox) closed() bool {
	select {
	case <-o.stop:
		return true
	default:
		return false
	}
}

// lockKey derives a stable advisory lock key from a name (FNV-1a 64).
func lockKey(name string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(name))
	return int64(h.Sum64())
}

// migrateLockKey is the event store's migrate.Migration lock, so outbox and event
// store migrations never run concurrently.
var migrateLockKey = lockKey("esflow:migrate")

//go:embed migrations/*.sql
var migrationFiles embed.FS

func loadMigrations() ([]migrate.Migration, error) {
	return migrate.Load(migrationFiles, "migrations")
}

// Migrate runs the event store's migrations, then creates or upgrades the
// outbox table (and its helper function). It is idempotent and safe to
// call concurrently: outbox migrations run in one transaction under the
// event store's migrate.Migration advisory lock and are recorded in
// [MigrationsTable] under the outbox table's name.
func (o *Outbox) Migrate(ctx context.Context) error {
	if err := o.events.Migrate(ctx); err != nil {
		return fmt.Errorf("outbox/postgres: migrate event store: %w", err)
	}
	ms, err := loadMigrations()
	if err != nil {
		return fmt.Errorf("outbox/postgres: migrate: %w", err)
	}
	q := eventstore.Quote
	n := struct{ Table, ParkedIndex, Guard, Leases string }{
		Table:       q(o.table),
		ParkedIndex: q(o.table + "_parked_idx"),
		Guard:       q(o.table + "_chain_guard"),
		Leases:      q(o.table + "_lease"),
	}
	err = pgx.BeginFunc(ctx, o.pool, func(tx pgx.Tx) error {
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
		rows, err := tx.Query(ctx, `SELECT version FROM `+MigrationsTable+` WHERE table_name = $1`, o.table)
		if err != nil {
			return fmt.Errorf("read applied migrations: %w", err)
		}
		applied, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			return fmt.Errorf("read applied migrations: %w", err)
		}
		done := map[int]bool{}
		for _, v := range applied {
			done[int(v)] = true
		}
		for _, m := range ms {
			if done[m.Version] {
				continue
			}
			var sql strings.Builder
			if err := m.Template.Execute(&sql, n); err != nil {
				return fmt.Errorf("render migrate.Migration %s: %w", m.Name, err)
			}
			if _, err := tx.Exec(ctx, sql.String()); err != nil {
				return fmt.Errorf("apply migrate.Migration %s: %w", m.Name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO `+MigrationsTable+` (table_name, version) VALUES ($1, $2)`, o.table, m.Version); err != nil {
				return fmt.Errorf("record migrate.Migration %s: %w", m.Name, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("outbox/postgres: migrate: %w", err)
	}
	if o.wal {
		return o.migrateWAL(ctx)
	}
	return nil
}

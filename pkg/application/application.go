package application

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/eventstore/memory"
	"github.com/esflow/esflow/pkg/eventstore/mysql"
	"github.com/esflow/esflow/pkg/eventstore/postgres"
	"github.com/esflow/esflow/pkg/eventstore/postgres/seqmetrics"
	"github.com/esflow/esflow/pkg/eventstore/sqlite"
	"github.com/esflow/esflow/pkg/outbox"
	outboxmemory "github.com/esflow/esflow/pkg/outbox/memory"
	outboxmysql "github.com/esflow/esflow/pkg/outbox/mysql"
	outboxpostgres "github.com/esflow/esflow/pkg/outbox/postgres"
	outboxsqlite "github.com/esflow/esflow/pkg/outbox/sqlite"
)

// Outbox is the relay's side of an application's transactional outbox.
type Outbox interface {
	outbox.Source
	outbox.Locker
	outbox.Waker
}

// Config configures an [Application]. The zero value is an in-memory
// SQLite store without encryption; register your types in Registry.
type Config struct {
	// DatabaseURL selects and locates the backend; see ParseDatabaseURL.
	// Default: SQLite in memory.
	DatabaseURL string
	// CipherKey, base64 of 32 bytes, encrypts stored events with
	// AES-256-GCM. Default: no encryption.
	CipherKey string
	// Compress deflates stored events (before encryption).
	Compress bool
	// Registry maps type names to Go types. Default: aggregate.NewRegistry()
	// (the ready-made events only).
	Registry *aggregate.Registry
	// Schema names the SQL table and columns. Default:
	// eventstore.DefaultSchema().
	Schema eventstore.Schema
	// CreateTables runs the backend's migrations in New (idempotent).
	CreateTables bool
	// SnapshotEvery maps aggregate type names to a snapshot interval for
	// Application.Save; absent types are never snapshotted automatically.
	SnapshotEvery map[string]uint64
	// SectionSize is the notification log's section size. Default 10.
	SectionSize int
	// Logger receives operational warnings. Default: slog.Default().
	Logger *slog.Logger
	// Outbox, when set, writes every saved event's Kafka message to the
	// transactional outbox in the same transaction (routing and envelope
	// per the builder). Application.Outbox then returns the relay's view.
	Outbox *outbox.Builder
	// OutboxTable names the outbox table. Default "esflow_outbox".
	OutboxTable string
	// Metrics, when set, is where the application registers its
	// collectors: on PostgreSQL, the notification sequencer's
	// (esflow_sequencer_*). Default: none.
	Metrics prometheus.Registerer
	// OutboxLease is how long a relay's shard lease lasts without renewal
	// (PostgreSQL only; see outbox/postgres Config.Lease). Default 3s.
	OutboxLease time.Duration
	// OutboxMode is how a PostgreSQL outbox carries messages:
	// [OutboxTable] rows (the default, and the only mode of the other
	// backends) or [OutboxWAL], logical-decoding messages read from a
	// replication slot (wal_level=logical). Writers and relays of one
	// outbox must use the same mode.
	OutboxMode OutboxMode
	// TracerProvider receives the spans of Save and SaveWithMessages
	// (see [Application.Save]). Default: the global provider,
	// otel.GetTracerProvider(), which is a no-op until the program
	// installs an SDK.
	TracerProvider trace.TracerProvider
}

// OutboxMode is Config.OutboxMode.
type OutboxMode string

// The outbox modes.
const (
	OutboxTable OutboxMode = "table"
	OutboxWAL   OutboxMode = "wal"
)

func (m OutboxMode) valid() error {
	switch m {
	case "", OutboxTable, OutboxWAL:
		return nil
	}
	return fmt.Errorf("%w: outbox mode %q (want %q or %q)", ErrConfig, string(m), OutboxTable, OutboxWAL)
}

// Application ties an event store to its backend and a notification log:
// the seed pages' application object. Build one with [New] or
// [NewFromEnv]; Close releases the database.
type Application struct {
	// Store stores and reads domain events.
	Store *eventstore.EventStore
	// Log is the application's notification log, in sections.
	Log *LocalLog
	// Backend is the backend the database URL selected.
	Backend Backend

	recorder eventstore.Recorder
	outbox   Outbox
	tracer   trace.Tracer
	cfg      Config
	closers  []func() error
}

// NewFromEnv builds an application from the environment (see
// [ConfigFromEnv]) with reg as its type registry.
func NewFromEnv(ctx context.Context, reg *aggregate.Registry) (*Application, error) {
	cfg, err := ConfigFromEnv()
	if err != nil {
		return nil, err
	}
	cfg.Registry = reg
	return New(ctx, cfg)
}

// New opens the backend selected by cfg.DatabaseURL, creates its tables
// when cfg.CreateTables is set, and returns the application.
func New(ctx context.Context, cfg Config) (*Application, error) {
	if cfg.Registry == nil {
		cfg.Registry = aggregate.NewRegistry()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := cfg.Schema.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.OutboxMode.valid(); err != nil {
		return nil, err
	}
	opts := eventstore.Options{Compress: cfg.Compress}
	if cfg.CipherKey != "" {
		c, err := eventstore.NewCipher(cfg.CipherKey)
		if err != nil {
			return nil, fmt.Errorf("application: %s: %w", EnvCipherKey, err)
		}
		opts.Cipher = c
	}
	backend, err := ParseDatabaseURL(cfg.DatabaseURL)
	if err != nil {
		return nil, err
	}
	if cfg.OutboxMode == OutboxWAL && backend != BackendPostgres {
		return nil, fmt.Errorf("%w: the WAL outbox mode needs PostgreSQL, not %s", ErrConfig, backend)
	}
	app := &Application{Backend: backend, cfg: cfg, tracer: tracerFrom(cfg.TracerProvider)}
	// migrate creates the backend's tables (nil for memory, which has none).
	var migrate func(context.Context) error
	switch backend {
	case BackendMemory:
		mem := memory.New()
		app.recorder = mem
		if cfg.Outbox != nil {
			box, err := outboxmemory.New(mem, outboxmemory.Config{})
			if err != nil {
				return nil, err
			}
			app.recorder, app.outbox = box, box
		}
	case BackendSQLite:
		dsn := cfg.DatabaseURL
		if dsn == "" {
			dsn = "sqlite::memory:"
		}
		s, err := sqlite.Open(ctx, dsn, sqlite.Config{Schema: cfg.Schema})
		if err != nil {
			return nil, err
		}
		app.closers = append(app.closers, s.Close)
		app.recorder = s
		migrate = s.Migrate
		if cfg.Outbox != nil {
			box, err := outboxsqlite.New(s, outboxsqlite.Config{OutboxTable: cfg.OutboxTable})
			if err != nil {
				return nil, errors.Join(err, app.Close())
			}
			app.closers = append(app.closers, box.Close)
			app.recorder, app.outbox, migrate = box, box, box.Migrate
		}
	case BackendPostgres:
		table := cfg.Schema.WithDefaults().Table
		hooks := postgres.LogHooks(cfg.Logger, table)
		if cfg.Metrics != nil {
			hooks = postgres.JoinHooks(hooks, seqmetrics.New(cfg.Metrics, table).Hooks())
		}
		s, err := postgres.Open(ctx, cfg.DatabaseURL, postgres.Config{Schema: cfg.Schema, Hooks: hooks})
		if err != nil {
			return nil, err
		}
		app.closers = append(app.closers, func() error { s.Close(); return nil })
		app.recorder = s
		migrate = s.Migrate
		if cfg.Outbox != nil {
			box, err := outboxpostgres.New(s, outboxpostgres.Config{OutboxTable: cfg.OutboxTable, Lease: cfg.OutboxLease, WAL: cfg.OutboxMode == OutboxWAL})
			if err != nil {
				return nil, errors.Join(err, app.Close())
			}
			app.closers = append(app.closers, func() error { box.Close(); return nil })
			app.recorder, app.outbox, migrate = box, box, box.Migrate
			if cfg.OutboxMode == OutboxWAL {
				ws, err := box.WALSource(outboxpostgres.WALConfig{Logger: cfg.Logger})
				if err != nil {
					return nil, errors.Join(err, app.Close())
				}
				app.outbox = ws
			}
		}
	case BackendMySQL:
		s, err := mysql.Open(ctx, cfg.DatabaseURL, mysql.Config{Schema: cfg.Schema})
		if err != nil {
			return nil, err
		}
		app.closers = append(app.closers, s.Close)
		app.recorder = s
		migrate = s.Migrate
		if cfg.Outbox != nil {
			box, err := outboxmysql.New(s, outboxmysql.Config{OutboxTable: cfg.OutboxTable})
			if err != nil {
				return nil, errors.Join(err, app.Close())
			}
			app.closers = append(app.closers, box.Close)
			app.recorder, app.outbox, migrate = box, box, box.Migrate
		}
	}
	if cfg.CreateTables && migrate != nil {
		if err := migrate(ctx); err != nil {
			return nil, errors.Join(err, app.Close())
		}
	}
	opts.Outbox = cfg.Outbox
	app.Store, err = eventstore.New(app.recorder, cfg.Registry, opts)
	if err != nil {
		return nil, errors.Join(err, app.Close())
	}
	app.Log = NewLocalLog(app.recorder, cfg.SectionSize)
	return app, nil
}

// Outbox returns the relay's view of the transactional outbox, or nil when
// Config.Outbox was not set.
func (a *Application) Outbox() Outbox { return a.outbox }

// SaveWithMessages is Save plus integration messages of the service's own,
// written to the outbox in the same transaction as the events.
func (a *Application) SaveWithMessages(ctx context.Context, msgs []outbox.Message, aggs ...aggregate.Aggregate) error {
	return saveWith(ctx, a.tracer, a.Store, msgs, aggs, func(typ string) uint64 { return a.cfg.SnapshotEvery[typ] }, a.cfg.Logger)
}

// Recorder returns the backend's recorder (for raw records).
func (a *Application) Recorder() eventstore.Recorder { return a.recorder }

// Save stores the pending events of the aggregates atomically (see
// [Save]) and takes the snapshots Config.SnapshotEvery asks for.
//
// Each save is a span "esflow.save", a child of ctx's span, with the
// attributes [AttrAggregateType], [AttrAggregateID],
// [AttrAggregateVersion] (the version after the save) and
// [AttrEventCount] (the *s forms for several aggregates), and an error
// status when it fails ([AttrConflict] set for ErrConcurrency). Its trace
// context is written into the outbox messages' traceparent and tracestate
// headers, so that the relay's and the projectors' spans link back to it.
func (a *Application) Save(ctx context.Context, aggs ...aggregate.Aggregate) error {
	return a.SaveWithMessages(ctx, nil, aggs...)
}

// Close releases the backend. It is safe to call more than once.
func (a *Application) Close() error {
	var errs []error
	for i := len(a.closers) - 1; i >= 0; i-- {
		errs = append(errs, a.closers[i]())
	}
	a.closers = nil
	return errors.Join(errs...)
}

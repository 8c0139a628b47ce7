package application

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/eventstore/memory"
	"github.com/esflow/esflow/pkg/eventstore/postgres"
	"github.com/esflow/esflow/pkg/eventstore/sqlite"
)

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
	app := &Application{Backend: backend, cfg: cfg}
	switch backend {
	case BackendMemory:
		app.recorder = memory.New()
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
		if cfg.CreateTables {
			if err := s.Migrate(ctx); err != nil {
				return nil, errors.Join(err, app.Close())
			}
		}
	case BackendPostgres:
		s, err := postgres.Open(ctx, cfg.DatabaseURL, postgres.Config{Schema: cfg.Schema})
		if err != nil {
			return nil, err
		}
		app.closers = append(app.closers, func() error { s.Close(); return nil })
		app.recorder = s
		if cfg.CreateTables {
			if err := s.Migrate(ctx); err != nil {
				return nil, errors.Join(err, app.Close())
			}
		}
	}
	app.Store = eventstore.MustNew(app.recorder, cfg.Registry, opts) // TODO outbox
	app.Log = NewLocalLog(app.recorder, cfg.SectionSize)
	return app, nil
}

// Recorder returns the backend's recorder (for raw records).
func (a *Application) Recorder() eventstore.Recorder { return a.recorder }

// Save stores the pending events of the aggregates atomically (see
// [Save]) and takes the snapshots Config.SnapshotEvery asks for.
func (a *Application) Save(ctx context.Context, aggs ...aggregate.Aggregate) error {
	return save(ctx, a.Store, aggs, func(typ string) uint64 { return a.cfg.SnapshotEvery[typ] }, a.cfg.Logger)
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

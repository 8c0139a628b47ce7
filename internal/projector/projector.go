// Package projector runs the example domain's projections
// (examples/readmodel) and serves their read models over HTTP as JSON.
// cmd/projector is a thin process around it; the embedded all-in-one
// stack (cmd/esflow) runs it in process.
package projector

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver

	"github.com/esflow/esflow/examples/readmodel"
	"github.com/esflow/esflow/pkg/eventstore/sqlite"
	"github.com/esflow/esflow/pkg/kafkaenv"
	"github.com/esflow/esflow/pkg/projection"
)

// Config configures a Service.
type Config struct {
	// DatabaseURL names the read-model database: postgres://… or
	// sqlite://path (a file; in-memory SQLite is refused). Required.
	DatabaseURL string
	// Kafka names the cluster. Brokers is required.
	Kafka kafkaenv.Config
	// GroupPrefix prefixes every projection's consumer group id.
	GroupPrefix string
	// Hooks, when set, returns the hooks of the named projection's runner
	// (for example Prometheus metrics).
	Hooks func(projection string) projection.Hooks
	// Logger. Default slog.Default().
	Logger *slog.Logger
}

// Service is the example projections over one read-model database.
type Service struct {
	write, read projection.DB
	closeDB     func()
	worlds      *projection.Runner
	examples    *projection.Runner
	counts      *projection.Runner
	log         *slog.Logger
}

// Open opens the read-model database, creates the projections' tables
// and returns the service, not yet consuming: call Run.
func Open(ctx context.Context, cfg Config) (*Service, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if len(cfg.Kafka.Brokers) == 0 {
		return nil, errors.New("projector: no Kafka brokers configured (KAFKA_BROKERS)")
	}
	write, read, closeDB, err := OpenDB(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, err
	}
	s := &Service{write: write, read: read, closeDB: closeDB, log: log}
	for _, x := range []struct {
		dst **projection.Runner
		p   projection.Projection
	}{{&s.worlds, readmodel.Worlds{}}, {&s.examples, readmodel.Examples{}}, {&s.counts, readmodel.EventCounts{}}} {
		rc := projection.RunnerConfig{
			Brokers:   cfg.Kafka.Brokers,
			GroupID:   cfg.GroupPrefix + x.p.Name(),
			Dialer:    cfg.Kafka.Dialer(),
			Transport: cfg.Kafka.Transport(),
			Logger:    log,
		}
		if cfg.Hooks != nil {
			rc.Hooks = cfg.Hooks(x.p.Name())
		}
		if *x.dst, err = projection.NewRunner(write, x.p, rc); err != nil {
			closeDB()
			return nil, err
		}
		// One at a time: concurrent CREATE TABLE IF NOT EXISTS can
		// conflict on PostgreSQL.
		if err := (*x.dst).Setup(ctx); err != nil {
			closeDB()
			return nil, fmt.Errorf("projector: set up %s: %w", x.p.Name(), err)
		}
	}
	return s, nil
}

// Runners returns the service's projection runners.
func (s *Service) Runners() []*projection.Runner {
	return []*projection.Runner{s.worlds, s.examples, s.counts}
}

// Run consumes until ctx is cancelled (then it returns nil) or a runner
// fails.
func (s *Service) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, r := range s.Runners() {
		g.Go(func() error { return r.Run(gctx) })
	}
	err := g.Wait()
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// Ready reports whether every projection has caught up.
func (s *Service) Ready(context.Context) error {
	for _, r := range s.Runners() {
		if !r.Ready() {
			return errors.New("not caught up")
		}
	}
	return nil
}

// Close releases the database. Call it after Run has returned.
func (s *Service) Close() { s.closeDB() }

// OpenDB opens the read-model database named by url. It returns a
// handle for the runners and one for the HTTP reads: the same pool on
// PostgreSQL; on SQLite the runners' transactions begin IMMEDIATE (they
// read before they write, and a deferred transaction cannot upgrade its
// lock while another connection writes) and the readers' do not.
func OpenDB(ctx context.Context, url string) (write, read projection.DB, closeFn func(), err error) {
	lower := strings.ToLower(url)
	switch {
	case url == "":
		return nil, nil, nil, errors.New("projector: DATABASE_URL is not set")
	case strings.HasPrefix(lower, "postgres://"), strings.HasPrefix(lower, "postgresql://"):
		pool, err := pgxpool.New(ctx, url)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("projector: open postgres: %w", err)
		}
		if err := pool.Ping(ctx); err != nil {
			pool.Close()
			return nil, nil, nil, fmt.Errorf("projector: connect postgres: %w", err)
		}
		db := projection.NewPostgres(pool)
		return db, db, pool.Close, nil
	case strings.HasPrefix(lower, "sqlite:"):
		path, inMemory, err := sqlite.ParseDSN(url)
		if err != nil {
			return nil, nil, nil, err
		}
		if inMemory {
			return nil, nil, nil, errors.New("projector: an in-memory SQLite read model is not supported: name a file")
		}
		const pragmas = "_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)"
		w, err := openSQLite(ctx, "file:"+path+"?"+pragmas+"&_txlock=immediate")
		if err != nil {
			return nil, nil, nil, err
		}
		r, err := openSQLite(ctx, "file:"+path+"?"+pragmas)
		if err != nil {
			_ = w.Close()
			return nil, nil, nil, err
		}
		closeFn := func() { _ = r.Close(); _ = w.Close() }
		return projection.NewSQLite(w), projection.NewSQLite(r), closeFn, nil
	}
	return nil, nil, nil, errors.New("projector: DATABASE_URL: want postgres://… or sqlite://path")
}

func openSQLite(ctx context.Context, dsn string) (*sql.DB, error) {
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("projector: open sqlite: %w", err)
	}
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("projector: open sqlite: %w", err)
	}
	return db, nil
}

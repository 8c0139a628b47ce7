// Package projector runs the example domain's projections
// (examples/readmodel) and serves their read models over HTTP as JSON.
// cmd/projector is a thin process around it; the embedded all-in-one
// stack (cmd/esflow) runs it in process. Besides Run, Mount and Ready it
// offers the operator's jobs on the same projections — Service.Rebuild
// (shadow tables swapped in while the runners keep serving) and
// Service.Redrive (dead letters) — and, with Config.Metrics, Prometheus
// metrics per projection (package projmetrics).
package projector

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver

	"github.com/esflow/esflow/examples/readmodel"
	"github.com/esflow/esflow/pkg/eventstore/sqlite"
	"github.com/esflow/esflow/pkg/kafkaenv"
	"github.com/esflow/esflow/pkg/projection"
	"github.com/esflow/esflow/pkg/projection/projmetrics"
)

// Config configures a Service.
type Config struct {
	// DatabaseURL names the read-model database: postgres://… or
	// sqlite://path (a file; in-memory SQLite is refused). Required.
	DatabaseURL string
	// Kafka names the cluster. Brokers is required.
	Kafka kafkaenv.Config
	// GroupPrefix prefixes every projection's consumer group id (the
	// runners join no group; a partition leased for the first time starts
	// at its group's committed offset, see projection.RunnerConfig.GroupID).
	GroupPrefix string
	// Leases configures partition ownership and the apply loops: the
	// projection.RunnerConfig fields LeaseTTL, LeaseCheck,
	// HeartbeatInterval, MemberName, ShutdownTimeout, Lanes and JoinDelay are taken
	// from it (zero fields: the runner's defaults); its other fields are
	// ignored.
	Leases projection.RunnerConfig
	// Hooks, when set, returns the hooks of the named projection's runner
	// (called besides Metrics' hooks).
	Hooks func(projection string) projection.Hooks
	// Metrics, when set, receives the projections' Prometheus metrics
	// (package projmetrics), labelled by projection.
	Metrics prometheus.Registerer
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
	projections []projection.Projection // in the order of Runners
	cfg         Config
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
	s := &Service{write: write, read: read, closeDB: closeDB, cfg: cfg, log: log}
	var metrics *projmetrics.Metrics
	if cfg.Metrics != nil {
		metrics = projmetrics.New(cfg.Metrics)
	}
	all := All()
	for _, x := range []struct {
		dst **projection.Runner
		p   projection.Projection
	}{{&s.worlds, all[0]}, {&s.examples, all[1]}, {&s.counts, all[2]}} {
		rc := projection.RunnerConfig{
			Brokers:   cfg.Kafka.Brokers,
			GroupID:   cfg.GroupPrefix + x.p.Name(),
			Dialer:    cfg.Kafka.Dialer(),
			Transport: cfg.Kafka.Transport(),
			Logger:    log,

			LeaseTTL:          cfg.Leases.LeaseTTL,
			LeaseCheck:        cfg.Leases.LeaseCheck,
			HeartbeatInterval: cfg.Leases.HeartbeatInterval,
			MemberName:        cfg.Leases.MemberName,
			ShutdownTimeout:   cfg.Leases.ShutdownTimeout,
			Lanes:             cfg.Leases.Lanes,
			JoinDelay:         cfg.Leases.JoinDelay,
		}
		var hooks []projection.Hooks
		if cfg.Hooks != nil {
			hooks = append(hooks, cfg.Hooks(x.p.Name()))
		}
		if metrics != nil {
			hooks = append(hooks, metrics.Hooks(x.p.Name()))
		}
		rc.Hooks = projection.JoinHooks(hooks...)
		if *x.dst, err = projection.NewRunner(write, x.p, rc); err != nil {
			closeDB()
			return nil, err
		}
		s.projections = append(s.projections, x.p)
		if metrics != nil {
			metrics.Observe(x.p.Name(), *x.dst)
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

// All returns the projections a Service runs, in the order of Runners.
func All() []projection.Projection {
	return []projection.Projection{readmodel.Worlds{}, readmodel.Examples{}, readmodel.EventCounts{}}
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

// Ready reports whether every projection is running, has caught up and
// has no open gap (projection.Runner.Ready); the error names the first
// one that has not.
func (s *Service) Ready(context.Context) error {
	for i, r := range s.Runners() {
		if !r.Ready() {
			return fmt.Errorf("projection %s not caught up", s.projections[i].Name())
		}
	}
	return nil
}

// ErrUnknownProjection is matched by the error of Rebuild and Redrive for
// a name that is none of the service's projections.
var ErrUnknownProjection = errors.New("projector: unknown projection")

// Projections returns the service's projections, in the order of Runners.
func (s *Service) Projections() []projection.Projection { return s.projections }

func (s *Service) lookup(name string) (projection.Projection, *projection.Runner, error) {
	for i, p := range s.projections {
		if p.Name() == name {
			return p, s.Runners()[i], nil
		}
	}
	return nil, nil, Known(name)
}

// Redrive applies the named projection's dead letters again (see
// projection.Runner.Redrive). The projection's live runner may be
// running, here or in another process.
func (s *Service) Redrive(ctx context.Context, name string, cfg projection.RedriveConfig) (projection.RedriveResult, error) {
	_, r, err := s.lookup(name)
	if err != nil {
		return projection.RedriveResult{}, err
	}
	return r.Redrive(ctx, cfg)
}

// Rebuild rebuilds the named projection from cfg.Source into shadow
// tables and swaps them in (see projection.Rebuild) while the live
// runner, here or in another process, keeps serving. Unset cfg.Runner
// fields take the service's Kafka settings (dead letters) and logger.
func (s *Service) Rebuild(ctx context.Context, name string, cfg projection.RebuildConfig) (projection.RebuildResult, error) {
	p, _, err := s.lookup(name)
	if err != nil {
		return projection.RebuildResult{}, err
	}
	rc := &cfg.Runner
	if len(rc.Brokers) == 0 {
		rc.Brokers = s.cfg.Kafka.Brokers
	}
	if rc.Dialer == nil {
		rc.Dialer = s.cfg.Kafka.Dialer()
	}
	if rc.Transport == nil {
		rc.Transport = s.cfg.Kafka.Transport()
	}
	if rc.Logger == nil {
		rc.Logger = s.log
	}
	return projection.Rebuild(ctx, s.write, p, cfg)
}

// Close releases the database. Call it after Run has returned.
func (s *Service) Close() { s.closeDB() }

// PoolConns is the size of the PostgreSQL pool OpenDB opens when url
// sets no pool_max_conns: room for the three runners at up to four
// lanes each (-lanes, projection.RunnerConfig.Lanes), and four
// connections for the lease steps and the HTTP reads. pgxpool's own
// default is four connections on a 2-core machine, which the runners,
// their lease steps and the HTTP reads would queue for.
const PoolConns = 3*4 + 4

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
		pcfg, err := pgxpool.ParseConfig(url)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("projector: open postgres: %w", err)
		}
		if !strings.Contains(lower, "pool_max_conns") {
			pcfg.MaxConns = PoolConns
		}
		pool, err := pgxpool.NewWithConfig(ctx, pcfg)
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

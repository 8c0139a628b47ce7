// Command projector runs the example domain's projections
// (examples/readmodel) with pkg/projection and serves the read models
// over HTTP as JSON.
//
// Environment: DATABASE_URL (postgres://… or sqlite://path) names the
// read-model database; KAFKA_BROKERS and the TLS/SASL variables of
// pkg/kafkaenv name the cluster. Flags: -group-prefix, -http-addr.
//
// Endpoints: GET /worlds, /worlds/{id}, /examples/{id}, /counts, plus
// /healthz, /readyz (every runner caught up) and /metrics.
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"
	_ "modernc.org/sqlite"

	"github.com/esflow/esflow/examples/readmodel"
	"github.com/esflow/esflow/pkg/eventstore/sqlite"
	"github.com/esflow/esflow/pkg/kafkaenv"
	"github.com/esflow/esflow/pkg/ops"
	"github.com/esflow/esflow/pkg/projection"
)

// config is everything run needs.
type config struct {
	DatabaseURL string
	Kafka       kafkaenv.Config
	GroupPrefix string
	HTTPAddr    string
	Logger      *slog.Logger
	// Listening, when set, receives the HTTP server's bound address.
	Listening func(net.Addr)
}

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	groupPrefix := flag.String("group-prefix", "", "prefix of the projections' consumer group ids")
	httpAddr := flag.String("http-addr", ":9103", "address of the HTTP server")
	flag.Parse()

	kcfg, err := kafkaenv.FromEnv("esflow-projector")
	if err != nil {
		log.Error("kafka configuration", "error", err)
		os.Exit(2)
	}
	cfg := config{
		DatabaseURL: os.Getenv("DATABASE_URL"),
		Kafka:       kcfg,
		GroupPrefix: *groupPrefix,
		HTTPAddr:    *httpAddr,
		Logger:      log,
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		log.Error("projector failed", "error", err)
		stop()
		os.Exit(1)
	}
}

// openDB opens the read-model database named by url. It returns a
// handle for the runners and one for the HTTP reads: the same pool on
// PostgreSQL; on SQLite the runners' transactions begin IMMEDIATE (they
// read before they write, and a deferred transaction cannot upgrade its
// lock while another connection writes) and the readers' do not.
func openDB(ctx context.Context, url string) (write, read projection.DB, closeFn func(), err error) {
	lower := strings.ToLower(url)
	switch {
	case url == "":
		return nil, nil, nil, errors.New("DATABASE_URL is not set")
	case strings.HasPrefix(lower, "postgres://"), strings.HasPrefix(lower, "postgresql://"):
		pool, err := pgxpool.New(ctx, url)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("open postgres: %w", err)
		}
		if err := pool.Ping(ctx); err != nil {
			pool.Close()
			return nil, nil, nil, fmt.Errorf("connect postgres: %w", err)
		}
		db := projection.NewPostgres(pool)
		return db, db, pool.Close, nil
	case strings.HasPrefix(lower, "sqlite:"):
		path, inMemory, err := sqlite.ParseDSN(url)
		if err != nil {
			return nil, nil, nil, err
		}
		if inMemory {
			return nil, nil, nil, errors.New("an in-memory SQLite read model is not supported: name a file")
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
	return nil, nil, nil, errors.New("DATABASE_URL: want postgres://… or sqlite://path")
}

func openSQLite(ctx context.Context, dsn string) (*sql.DB, error) {
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	return db, nil
}

// run runs the projections and the HTTP server until ctx is cancelled or
// one of them fails.
func run(ctx context.Context, cfg config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if len(cfg.Kafka.Brokers) == 0 {
		return errors.New("no Kafka brokers configured (KAFKA_BROKERS)")
	}
	db, readDB, closeDB, err := openDB(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer closeDB()

	newRunner := func(p projection.Projection) (*projection.Runner, error) {
		return projection.NewRunner(db, p, projection.RunnerConfig{
			Brokers:   cfg.Kafka.Brokers,
			GroupID:   cfg.GroupPrefix + p.Name(),
			Dialer:    cfg.Kafka.Dialer(),
			Transport: cfg.Kafka.Transport(),
			Logger:    log,
		})
	}
	var rs runners
	for _, x := range []struct {
		dst **projection.Runner
		p   projection.Projection
	}{{&rs.worlds, readmodel.Worlds{}}, {&rs.examples, readmodel.Examples{}}, {&rs.counts, readmodel.EventCounts{}}} {
		if *x.dst, err = newRunner(x.p); err != nil {
			return err
		}
		// One at a time: concurrent CREATE TABLE IF NOT EXISTS can
		// conflict on PostgreSQL.
		if err := (*x.dst).Setup(ctx); err != nil {
			return fmt.Errorf("set up %s: %w", x.p.Name(), err)
		}
	}

	h := newServer(readDB, rs, ops.NewRegistry(), log)
	g, gctx := errgroup.WithContext(ctx)
	for _, r := range rs.all() {
		g.Go(func() error { return r.Run(gctx) })
	}
	g.Go(func() error { return ops.Serve(gctx, cfg.HTTPAddr, h, 5*time.Second, log, cfg.Listening) })
	log.Info("projector running", "http", cfg.HTTPAddr, "brokers", cfg.Kafka.Brokers)
	err = g.Wait()
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

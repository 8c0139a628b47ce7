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
	"errors"
	"flag"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	_ "modernc.org/sqlite"

	"github.com/esflow/esflow/internal/projector"
	"github.com/esflow/esflow/pkg/kafkaenv"
	"github.com/esflow/esflow/pkg/ops"
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

// run runs the projections and the HTTP server until ctx is cancelled or
// one of them fails.
func run(ctx context.Context, cfg config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	svc, err := projector.Open(ctx, projector.Config{
		DatabaseURL: cfg.DatabaseURL, Kafka: cfg.Kafka, GroupPrefix: cfg.GroupPrefix, Logger: log,
	})
	if err != nil {
		return err
	}
	defer svc.Close()

	live := map[string]ops.Check{"process": func(context.Context) error { return nil }}
	ready := map[string]ops.Check{"projections": svc.Ready}
	mux := ops.Handler(ops.NewRegistry(), live, ready)
	svc.Mount(mux, "")

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return svc.Run(gctx) })
	g.Go(func() error { return ops.Serve(gctx, cfg.HTTPAddr, mux, 5*time.Second, log, cfg.Listening) })
	log.Info("projector running", "http", cfg.HTTPAddr, "brokers", cfg.Kafka.Brokers)
	err = g.Wait()
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

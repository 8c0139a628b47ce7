// Command projector runs the example domain's projections
// (examples/readmodel) with pkg/projection and serves the read models
// over HTTP as JSON.
//
// Environment: DATABASE_URL (postgres://… or sqlite://path) names the
// read-model database; KAFKA_BROKERS and the TLS/SASL variables of
// pkg/kafkaenv name the cluster; EVENTSTORE_URL (and CIPHER_KEY when the
// store is encrypted) names the event store for -rebuild-from store.
// Flags (each can also be set by its ESFLOW_* variable; projector -h lists
// them all): -group-prefix, -http-addr, -log-level, -log-format, -version,
// and partition ownership:
// -lease-ttl (how long a paused or cut-off replica keeps its partitions,
// default 2s), -lease-check (how often replicas look for partitions to
// take or hand over, default 100ms), -member-name (default the host
// name), -shutdown-timeout (how long the batch in progress may take to
// finish after SIGTERM, default 10s; the partitions are handed over at
// once), -lanes (batches each projection may apply at once, over
// different partitions; default 1) and -join-delay (when other replicas
// are running, how long a starting one waits before it joins and is
// handed its share, so that it has finished starting; default 1s, 0
// joins at once; a replica that finds no other joins at once). The
// replicas share each projection's partitions through lease rows in the
// read-model database (pkg/projection DESIGN.md, "Partition leases"): a
// killed replica's partitions are taken over within about a LeaseCheck,
// a SIGTERM'd one hands them over as it exits.
//
// Endpoints: GET /worlds, /worlds/{id}, /examples/{id}, /counts, plus
// /healthz, /readyz (every runner running, caught up and without open
// gaps) and /metrics (package projmetrics: events applied, duplicates,
// gaps, dead letters, failures, batch sizes, lag per partition, age of
// the newest applied event).
//
// One-off jobs, which print their progress and result and exit:
//
//	projector -redrive NAME [-redrive-from-beginning]
//	    applies the projection's dead letters again;
//	projector -rebuild NAME [-rebuild-from store|kafka] [-keep-old]
//	    rebuilds it from scratch into shadow tables and swaps them in,
//	    while running projectors keep serving (pkg/projection DESIGN.md).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	_ "modernc.org/sqlite"

	"github.com/esflow/esflow/examples/domain"
	"github.com/esflow/esflow/internal/cli"
	"github.com/esflow/esflow/internal/projector"
	"github.com/esflow/esflow/internal/telemetry"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
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
	// Leases: LeaseTTL, LeaseCheck, MemberName, ShutdownTimeout, Lanes,
	// JoinDelay.
	Leases projection.RunnerConfig
	Logger *slog.Logger
	// Listening, when set, receives the HTTP server's bound address.
	Listening func(net.Addr)

	// Redrive names a projection whose dead letters to re-drive, then exit.
	Redrive string
	// RedriveFromBeginning reads the whole dead-letter topic.
	RedriveFromBeginning bool
	// Rebuild names a projection to rebuild and swap in, then exit.
	Rebuild string
	// RebuildFrom is "store" (EventStoreURL's notification log) or "kafka"
	// (the topics from their earliest offsets).
	RebuildFrom string
	// EventStoreURL and CipherKey open the event store for a store rebuild.
	EventStoreURL, CipherKey string
	// KeepOld keeps the replaced tables as <table>_old.
	KeepOld bool
	// Out receives the jobs' progress and results. Default os.Stdout.
	Out io.Writer
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	cfg, err := parseConfig(os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	var stopTracing func(context.Context) error
	if err == nil {
		stopTracing, err = telemetry.Setup(ctx, "esflow-projector")
	}
	if err == nil {
		err = run(ctx, cfg)
		_ = stopTracing(context.WithoutCancel(ctx)) // flushes the spans
	}
	stop()
	cli.Exit("projector", err)
}

// command describes the projector for its -h.
var command = cli.Command{
	Name:    "projector",
	Summary: "Runs the example domain's projections from Kafka into a read-model database and serves the read models over HTTP.",
	Env: []cli.Var{
		{Name: application.EnvDatabaseURL, Usage: "the read-model database: postgres://… or sqlite://path (required)"},
		{Name: "KAFKA_BROKERS", Usage: "host:port[,…] (required; and the KAFKA_CLIENT_ID, KAFKA_TLS*, KAFKA_SASL_* variables of package kafkaenv)"},
		{Name: application.EnvCipherKey, Usage: "with -rebuild-from store: the key of an encrypted event store"},
	},
}

// parseConfig reads the command line and the environment.
func parseConfig(args []string, getenv func(string) string, stdout, logOut io.Writer) (config, error) {
	fs := cli.New(command, getenv, stdout)
	var (
		groupPrefix     = fs.String("group-prefix", "", "prefix of the consumer group ids whose committed offsets a partition starts from when first leased (upgrades from the consumer-group projector)")
		httpAddr        = fs.String("http-addr", ":9103", "address of the HTTP server")
		redrive         = fs.String("redrive", "", "re-drive the dead letters of this projection, print the result and exit")
		fromBeginning   = fs.Bool("redrive-from-beginning", false, "with -redrive: read the whole dead-letter topic")
		rebuild         = fs.String("rebuild", "", "rebuild this projection into shadow tables, swap them in and exit")
		rebuildFrom     = fs.String("rebuild-from", "store", "with -rebuild: store (the event store's notification log) or kafka (earliest offsets)")
		storeURL        = fs.String("eventstore-url", "", "with -rebuild-from store: the event store's database URL")
		keepOld         = fs.Bool("keep-old", false, "with -rebuild: keep the replaced tables as <table>_old")
		leaseTTL        = fs.Duration("lease-ttl", 2*time.Second, "how long a replica without a heartbeat (paused, cut off) keeps its partitions")
		leaseCheck      = fs.Duration("lease-check", 100*time.Millisecond, "how often a replica looks for partitions to take over or hand over")
		memberName      = fs.String("member-name", "", "this replica's name in the members table (default the host name)")
		shutdownTimeout = fs.Duration("shutdown-timeout", 10*time.Second, "on SIGTERM, how long the batch in progress may take to finish (the partitions are handed over at once)")
		joinDelay       = fs.Duration("join-delay", time.Second, "when other replicas are running, how long a starting replica waits before it joins and is handed its share (0: at once)")
		lanes           = fs.Int("lanes", 1, "batches each projection may apply at once, in separate transactions over different partitions (default 1; more than 4 wants pool_max_conns in DATABASE_URL)")
	)
	fs.Alias("eventstore-url", "EVENTSTORE_URL")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	kcfg, err := kafkaenv.FromEnv("esflow-projector")
	if err != nil {
		return config{}, err
	}
	return config{
		DatabaseURL: getenv(application.EnvDatabaseURL),
		Kafka:       kcfg,
		GroupPrefix: *groupPrefix,
		HTTPAddr:    *httpAddr,
		Logger:      fs.Logger(logOut),
		Leases: projection.RunnerConfig{
			LeaseTTL: *leaseTTL, LeaseCheck: *leaseCheck, MemberName: *memberName, ShutdownTimeout: *shutdownTimeout,
			Lanes: *lanes, JoinDelay: *joinDelay,
		},

		Redrive: *redrive, RedriveFromBeginning: *fromBeginning,
		Rebuild: *rebuild, RebuildFrom: *rebuildFrom, KeepOld: *keepOld,
		EventStoreURL: *storeURL, CipherKey: getenv(application.EnvCipherKey),
	}, nil
}

// run runs the projections and the HTTP server until ctx is cancelled or
// one of them fails; with Redrive or Rebuild set it runs that job instead.
func run(ctx context.Context, cfg config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.Out == nil {
		cfg.Out = os.Stdout
	}
	if cfg.Redrive != "" && cfg.Rebuild != "" {
		return errors.New("projector: -redrive and -rebuild are separate jobs: give one")
	}
	metrics := ops.NewRegistry()
	svc, err := projector.Open(ctx, projector.Config{
		DatabaseURL: cfg.DatabaseURL, Kafka: cfg.Kafka, GroupPrefix: cfg.GroupPrefix, Logger: log, Metrics: metrics,
		Leases: cfg.Leases,
	})
	if err != nil {
		return err
	}
	defer svc.Close()
	switch {
	case cfg.Redrive != "":
		return redrive(ctx, svc, cfg)
	case cfg.Rebuild != "":
		return rebuild(ctx, svc, cfg)
	}

	live := map[string]ops.Check{"process": func(context.Context) error { return nil }}
	ready := map[string]ops.Check{"projections": svc.Ready}
	mux := ops.Handler(metrics, live, ready)
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

// redrive re-drives one projection's dead letters and prints the result.
func redrive(ctx context.Context, svc *projector.Service, cfg config) error {
	return svc.RedriveJob(ctx, cfg.Out, cfg.Redrive, projection.RedriveConfig{FromBeginning: cfg.RedriveFromBeginning})
}

// rebuild rebuilds one projection, printing its progress, and swaps it in.
func rebuild(ctx context.Context, svc *projector.Service, cfg config) error {
	if err := projector.Known(cfg.Rebuild); err != nil {
		return err
	}
	var source projection.RebuildSource
	switch cfg.RebuildFrom {
	case "kafka":
		source = projection.KafkaSource{}
	case "store", "":
		if cfg.EventStoreURL == "" {
			return errors.New("projector: -rebuild-from store needs the event store's URL (EVENTSTORE_URL or -eventstore-url)")
		}
		reg := aggregate.NewRegistry()
		domain.Register(reg)
		app, err := application.New(ctx, application.Config{DatabaseURL: cfg.EventStoreURL, CipherKey: cfg.CipherKey, Registry: reg})
		if err != nil {
			return fmt.Errorf("projector: open the event store: %w", err)
		}
		defer func() { _ = app.Close() }()
		source = projection.StoreSource{Store: app.Store}
	default:
		return fmt.Errorf("projector: -rebuild-from %q: want store or kafka", cfg.RebuildFrom)
	}
	return svc.RebuildJob(ctx, cfg.Out, cfg.Rebuild, source, cfg.KeepOld)
}

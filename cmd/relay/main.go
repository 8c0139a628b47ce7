// Command relay publishes the transactional outbox to Kafka.
//
// Configuration comes from the environment (DATABASE_URL, KAFKA_BROKERS and
// the KAFKA_TLS_* / KAFKA_SASL_* variables of package kafkaenv) and flags,
// each of which can also be set by its ESFLOW_* variable (relay -h lists
// them all):
//
//	relay [-shard 0 -shards 1] [-batch-size 4000] [-http-addr :9102]
//	      [-auto-create-topics -topic-partitions 8 -topic-replication 1]
//	      [-outbox-mode table|wal] [-lease 3s]
//	      [-cloudevents=true -cloudevents-source esflow]
//	      [-log-level info -log-format text] [-version]
//
// Every published event carries the CloudEvents Kafka binding's ce_*
// headers (binary mode) next to the esflow-* ones; -cloudevents=false turns
// them off and -cloudevents-source sets ce_source.
//
// With -outbox-mode wal (or ESFLOW_OUTBOX_MODE=wal; PostgreSQL with
// wal_level=logical) the relay streams the writers' logical-decoding
// messages from a replication slot instead of reading an outbox table; its
// /metrics then show the slot's retained WAL (pkg/outbox/postgres/WAL.md).
//
// Several replicas may run: one is active per shard (a PostgreSQL advisory
// lock with a lease), the others wait and take over within the lease (3s by
// default, -lease) when it dies or stalls; a stalled owner that resumes
// publishes nothing more (see pkg/relay/DESIGN.md, "Fencing").
// SIGTERM finishes the in-flight batch and exits. /healthz, /readyz and
// /metrics are served on -http-addr.
package main

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/esflow/esflow/internal/cli"
	"github.com/esflow/esflow/internal/relayservice"
	"github.com/esflow/esflow/internal/telemetry"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/kafkaenv"
	"github.com/esflow/esflow/pkg/ops"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/relay"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	stopTracing, err := telemetry.Setup(ctx, "esflow-relay")
	if err == nil {
		err = run(ctx, os.Args[1:], os.Stderr, nil)
		_ = stopTracing(context.WithoutCancel(ctx)) // flushes the spans
	}
	stop()
	cli.Exit("relay", err)
}

// command describes the relay for its -h.
var command = cli.Command{
	Name:    "relay",
	Summary: "Publishes the transactional outbox to Kafka. One replica is active per shard; the others wait to take over.",
	Env: append([]cli.Var{
		{Name: application.EnvDatabaseURL, Usage: "the event store and its outbox: postgres://…, sqlite://path, mysql://… (required; alias DB_URI)"},
	}, kafkaVars...),
}

// kafkaVars are the variables of package kafkaenv.
var kafkaVars = []cli.Var{
	{Name: "KAFKA_BROKERS", Usage: "host:port[,host:port…] (required)"},
	{Name: "KAFKA_CLIENT_ID", Usage: "client id (default esflow-relay)"},
	{Name: "KAFKA_TLS", Usage: `"true" for TLS (also KAFKA_TLS_CA_FILE, KAFKA_TLS_CERT_FILE, KAFKA_TLS_KEY_FILE)`},
	{Name: "KAFKA_SASL_MECHANISM", Usage: "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD)"},
}

// run is main without the process: ready, when set, gets the ops address.
func run(ctx context.Context, args []string, logOut io.Writer, ready func(net.Addr)) error {
	fs := cli.New(command, os.Getenv, os.Stdout)
	var (
		shard    = fs.Int("shard", 0, "index of the outbox shard to publish")
		shards   = fs.Int("shards", 1, "number of outbox shards (messages are split by key hash)")
		batch    = fs.Int("batch-size", relay.DefaultBatchSize, "most messages fetched and published at once")
		poll     = fs.Duration("poll-interval", 0, "idle poll interval (default 1s with LISTEN/NOTIFY, 20ms without)")
		httpAddr = fs.String("http-addr", ":9102", "address of /healthz, /readyz and /metrics")
		relayF   = fs.RelayFlags()
		table    = fs.String("outbox-table", "", "outbox table name (default esflow_outbox)")
		migrate  = fs.Bool("migrate", cli.DefaultMigrate, "create the outbox tables if missing")
		mode     = fs.String("outbox-mode", "", "PostgreSQL outbox mode: table (default) or wal (logical decoding)")
		lease    = fs.Duration("lease", 0, "PostgreSQL shard lease: a paused owner stops publishing, and a successor starts, after this long (default 3s)")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := fs.Logger(logOut)

	kcfg, err := kafkaenv.FromEnv("esflow-relay")
	if err != nil {
		return err
	}
	dbURL := os.Getenv(application.EnvDatabaseURL)
	if dbURL == "" {
		dbURL = os.Getenv(application.EnvDBURI)
	}
	if dbURL == "" {
		return errors.New("DATABASE_URL is required")
	}
	app, err := application.New(ctx, application.Config{
		DatabaseURL: dbURL, Outbox: &outbox.Builder{}, OutboxTable: *table, OutboxLease: *lease, OutboxMode: application.OutboxMode(*mode), CreateTables: *migrate, Logger: log,
	})
	if err != nil {
		return err
	}
	defer app.Close()
	box := app.Outbox()

	reg := ops.NewRegistry()
	sh := outbox.Shard{Index: *shard, Count: *shards}
	rcfg := relayservice.Config{Kafka: kcfg, Shard: sh, BatchSize: *batch, PollInterval: *poll, Metrics: reg, Logger: log}
	rcfg.SetFlags(relayF)
	r, err := relayservice.New(box, rcfg)
	if err != nil {
		return err
	}
	defer func() { _ = r.Close() }()
	live := map[string]ops.Check{"loop": r.Live}
	readyChecks := map[string]ops.Check{"database": func(ctx context.Context) error {
		_, err := box.Backlog(ctx, sh)
		return err
	}}
	log.Info("relay starting", "shard", sh.Index, "shards", max(sh.Count, 1), "brokers", kcfg.Brokers, "backend", app.Backend)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return r.Run(gctx) })
	g.Go(func() error {
		return ops.Serve(gctx, *httpAddr, ops.Handler(reg, live, readyChecks), 5*time.Second, log, ready)
	})
	return g.Wait()
}

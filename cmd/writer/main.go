// Command writer is the esflow writer service: an HTTP JSON API (package
// pkg/writer) that appends events through the transactional outbox, with
// the outbox relay running in the same process by default.
//
// Environment:
//
//	DATABASE_URL   where events live (required; alias DB_URI): postgres://…,
//	               sqlite:///abs/path.db, sqlite://rel/path.db, sqlite::memory:
//	CIPHER_KEY     base64 of 32 bytes: encrypt stored events (optional)
//	ESFLOW_COMPRESS  "true" to deflate stored events (optional)
//	WRITER_TOKEN   bearer token required on mutating requests (optional)
//	KAFKA_BROKERS  host:port[,…]: required when the relay runs in-process,
//	               with the KAFKA_CLIENT_ID, KAFKA_TLS* and KAFKA_SASL_*
//	               variables of package kafkaenv
//
// Flags (each can also be set by its ESFLOW_* variable: -http-addr by
// ESFLOW_HTTP_ADDR and so on; writer -h lists them all):
//
//	-http-addr :8080          API, web page, /healthz, /readyz, /metrics
//	-relay=true               publish the outbox from this process; turn it
//	                          off where cmd/relay is deployed separately
//	-auto-create-topics=true  create missing topics before publishing
//	-topic-partitions 8       partitions of auto-created topics
//	-topic-replication 1      replication factor of auto-created topics (-1: broker default)
//	-cloudevents=true         CloudEvents ce_* headers on published events
//	-cloudevents-source esflow  their ce_source
//	-max-body-bytes 1048576   request body limit (413 above)
//	-migrate=true             create the event and outbox tables if missing
//	-outbox-table ""          outbox table name (default esflow_outbox)
//	-shutdown-grace 10s       how long in-flight requests may take on SIGTERM
//	-log-level info           debug, info, warn or error
//	-log-format text          text or json
//	-version                  print the version and exit
//
// SIGTERM or SIGINT stops accepting connections, lets in-flight requests
// finish (within -shutdown-grace), then stops the relay after its in-flight
// batch and closes the database.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/esflow/esflow/examples/domain"
	"github.com/esflow/esflow/examples/domainapi"
	"github.com/esflow/esflow/internal/cli"
	"github.com/esflow/esflow/internal/relayservice"
	"github.com/esflow/esflow/internal/telemetry"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/kafkaenv"
	"github.com/esflow/esflow/pkg/ops"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/writer"
)

// EnvToken names the variable holding the bearer token.
const EnvToken = "WRITER_TOKEN"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	stopTracing, err := telemetry.Setup(ctx, "esflow-writer")
	if err == nil {
		err = run(ctx, os.Args[1:], os.Stderr, nil)
		_ = stopTracing(context.WithoutCancel(ctx)) // flushes the spans
	}
	stop()
	cli.Exit("writer", err)
}

// command describes the writer for its -h.
var command = cli.Command{
	Name:    "writer",
	Summary: "Serves the writer's HTTP JSON API, appending events through the transactional outbox, and (by default) relays the outbox to Kafka.",
	Env: []cli.Var{
		{Name: application.EnvDatabaseURL, Usage: "where events live: postgres://…, sqlite://path, mysql://… (required; alias DB_URI)"},
		{Name: application.EnvCipherKey, Usage: "base64 of 32 bytes: encrypt stored events"},
		{Name: application.EnvCompress, Usage: `"true": deflate stored events`},
		{Name: EnvToken, Usage: "bearer token required on mutating requests"},
		{Name: "KAFKA_BROKERS", Usage: "host:port[,…], required with -relay (and the KAFKA_CLIENT_ID, KAFKA_TLS*, KAFKA_SASL_* variables of package kafkaenv)"},
	},
}

// run is main without the process: configuration from args and the
// environment, logs to logOut; ready, when set, gets the HTTP address once
// it listens. It returns when ctx ends (nil) or on a fatal error.
func run(ctx context.Context, args []string, logOut io.Writer, ready func(net.Addr)) error {
	fs := cli.New(command, os.Getenv, os.Stdout)
	var (
		httpAddr  = fs.String("http-addr", ":8080", "address of the API, the web page, /healthz, /readyz and /metrics")
		inProcess = fs.Bool("relay", true, "run the outbox relay in this process")
		relayF    = fs.RelayFlags()
		maxBody   = fs.Int64("max-body-bytes", writer.DefaultMaxBodyBytes, "largest request body accepted")
		migrate   = fs.Bool("migrate", cli.DefaultMigrate, "create the event and outbox tables if missing")
		table     = fs.String("outbox-table", "", "outbox table name (default esflow_outbox)")
		grace     = fs.Duration("shutdown-grace", 10*time.Second, "how long in-flight requests may take at shutdown")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *maxBody <= 0 {
		return cli.Usagef("-max-body-bytes %d: must be positive", *maxBody)
	}
	log := fs.Logger(logOut)

	cfg, err := application.ConfigFromEnv()
	if err != nil {
		return err
	}
	if cfg.DatabaseURL == "" {
		return errors.New("DATABASE_URL is required")
	}
	var kcfg kafkaenv.Config
	if *inProcess {
		if kcfg, err = kafkaenv.FromEnv("esflow-writer"); err != nil {
			return fmt.Errorf("%w (or run with -relay=false)", err)
		}
	}
	reg := aggregate.NewRegistry()
	domain.Register(reg)
	metricsReg := ops.NewRegistry()
	cfg.Registry, cfg.Outbox, cfg.OutboxTable, cfg.CreateTables, cfg.Logger = reg, &outbox.Builder{}, *table, *migrate, log
	cfg.Metrics = metricsReg
	app, err := application.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer app.Close()

	readyChecks := map[string]ops.Check{}
	var rl *relayservice.Service
	if *inProcess {
		rcfg := relayservice.Config{Kafka: kcfg, Metrics: metricsReg, Logger: log}
		rcfg.SetFlags(relayF)
		rl, err = relayservice.New(app.Outbox(), rcfg)
		if err != nil {
			return err
		}
		defer func() { _ = rl.Close() }()
		readyChecks["relay"] = rl.Live
	}
	srv, err := writer.New(writer.Config{
		App: app, Token: os.Getenv(EnvToken), MaxBodyBytes: *maxBody, Logger: log,
		Registry: metricsReg, Ready: readyChecks,
	})
	if err != nil {
		return err
	}
	domainapi.Mount(srv) // the example domain, through the writer's public API

	// The relay outlives the HTTP server, so that what the last requests
	// wrote is published before the process exits; if it fails on its own,
	// the server stops too.
	serveCtx, stopServing := context.WithCancel(ctx)
	defer stopServing()
	relayCtx, stopRelay := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRelay()
	relayDone := make(chan error, 1)
	if rl != nil {
		go func() {
			err := rl.Run(relayCtx)
			if relayCtx.Err() == nil {
				log.Error("relay stopped", "err", err)
				stopServing()
				if err == nil {
					err = errors.New("relay stopped")
				}
			} else {
				err = nil
			}
			relayDone <- err
		}()
	} else {
		relayDone <- nil
	}
	log.Info("writer starting", "http_addr", *httpAddr, "backend", app.Backend, "relay", *inProcess,
		"brokers", kcfg.Brokers, "auth", os.Getenv(EnvToken) != "")
	serveErr := ops.Serve(serveCtx, *httpAddr, srv.Handler(), *grace, log, ready)
	stopRelay()
	relayErr := <-relayDone
	log.Info("writer stopped")
	return errors.Join(serveErr, relayErr)
}

// Command esflow runs the whole pipeline in one process: the event store,
// the writer's HTTP API, the outbox relay, a Kafka-protocol broker and
// the example projector. With nothing configured it needs nothing
// installed:
//
//	go run ./cmd/esflow
//
// stores events in ./esflow-data/events.db (SQLite), read models in
// ./esflow-data/read.db, starts the embedded broker on 127.0.0.1:9092
// (another free port when that one is taken) and serves the writer's API,
// the read models (under /read/) and the operations console (live charts,
// stream browser, notification log, projections) on http://127.0.0.1:8080.
// It prints what to try next. Ctrl-C stops it
// cleanly; run it again and the data is still there, the topics too: the
// embedded broker keeps its log in memory, so at start-up every stored event
// is published to it again, in order and keyed as the relay keys them (the
// projectors skip what their read models already hold).
//
// The same binary uses real servers when told to:
//
//	DATABASE_URL       event store: postgres://…, sqlite://path (default sqlite://<data>/events.db)
//	READ_DATABASE_URL  read models: postgres://… or sqlite://path
//	                   (default: DATABASE_URL when it is PostgreSQL, else sqlite://<data>/read.db)
//	KAFKA_BROKERS      a real cluster instead of the embedded broker
//	                   (plus the KAFKA_TLS_* and KAFKA_SASL_* variables of pkg/kafkaenv)
//	CIPHER_KEY         encrypt stored events (base64 of 32 bytes)
//	WRITER_TOKEN       bearer token required on mutating endpoints
//
// Flags: -data, -http-addr, -broker-addr, the relay's topic and
// CloudEvents flags, -log-level, -log-format, -version; each can also be
// set by its ESFLOW_* variable (esflow -h lists them all).
//
// The same binary is the operator's tool, working on the databases
// directly (the ones the stack above would use, from the same variables):
//
//	esflow stream get ID [-o json|table]       a stream's events, decoded
//	esflow stream verify ID                    its hash chain and head (exit 1 when broken)
//	esflow log tail [-from N] [-n 10] [-f]     the notification log, -f follows it
//	esflow projection status NAME              a projection's leases, members, gaps, dead letters
//	esflow projection redrive NAME             apply its dead letters again (needs Kafka)
//	esflow projection rebuild NAME             rebuild it from the event store and swap it in
//	esflow migrate                             create or upgrade the schemas and exit
//	esflow help | version
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/esflow/esflow/examples/domain"
	"github.com/esflow/esflow/examples/domainapi"
	"github.com/esflow/esflow/internal/cli"
	"github.com/esflow/esflow/internal/projector"
	"github.com/esflow/esflow/internal/relayservice"
	"github.com/esflow/esflow/internal/telemetry"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/broker"
	"github.com/esflow/esflow/pkg/kafkaenv"
	"github.com/esflow/esflow/pkg/ops"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/writer"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	stopTracing, err := telemetry.Setup(ctx, "esflow")
	if err == nil {
		err = run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr, nil)
		_ = stopTracing(context.WithoutCancel(ctx)) // flushes the spans
	}
	stop()
	cli.Exit("esflow", err)
}

// Endpoints is where a running stack can be reached.
type Endpoints struct {
	HTTP   string // base URL of the writer, the read models and the page
	Broker string // Kafka bootstrap address
}

// The variables the stack and the operator's commands read.
const (
	EnvReadDatabaseURL = "READ_DATABASE_URL"
	EnvWriterToken     = "WRITER_TOKEN"
	EnvKafkaBrokers    = "KAFKA_BROKERS"
)

// stackVars are the variables of the stack and of the operator's
// commands, for -h.
var stackVars = []cli.Var{
	{Name: application.EnvDatabaseURL, Usage: "event store: postgres://…, sqlite://path (default sqlite://<data>/events.db; alias DB_URI)"},
	{Name: EnvReadDatabaseURL, Usage: "read models: postgres://… or sqlite://path (default DATABASE_URL when it is PostgreSQL, else sqlite://<data>/read.db)"},
	{Name: EnvKafkaBrokers, Usage: "a real cluster instead of the embedded broker (and the KAFKA_CLIENT_ID, KAFKA_TLS*, KAFKA_SASL_* variables of package kafkaenv)"},
	{Name: application.EnvCipherKey, Usage: "base64 of 32 bytes: encrypt stored events"},
	{Name: EnvWriterToken, Usage: "bearer token required on mutating endpoints"},
}

// stackCommand describes the embedded stack for its -h.
var stackCommand = cli.Command{
	Name:     "esflow",
	Synopsis: "esflow [flags]  |  esflow COMMAND [flags] [ARG]",
	Summary: "Without a command: runs the whole pipeline in one process (event store, writer API, outbox relay, " +
		"Kafka-protocol broker, projector, console). With a command: works on the databases directly.",
	Env: stackVars,
	Extra: `Commands:
  stream get ID [-o json|table]     a stream's events, decoded
  stream verify ID                  check its hash chain and head; exit 1 when broken
  log tail [-from N] [-n 10] [-f]   the notification log; -f follows it
  projection status NAME            a projection's stored state
  projection redrive NAME           apply its dead letters again (needs Kafka)
  projection rebuild NAME           rebuild it from the event store and swap it in
  migrate                           create or upgrade the schemas and exit
  help, version
"esflow COMMAND -h" describes a command.`,
}

// run is main without the process. getenv reads the environment; out gets
// the banner (or a command's output), logOut the logs; ready, when set,
// gets the endpoints once everything listens.
func run(ctx context.Context, args []string, getenv func(string) string, out, logOut io.Writer, ready func(Endpoints)) error {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		return admin(ctx, args, getenv, out, logOut)
	}
	fs := cli.New(stackCommand, getenv, out)
	var (
		dataDir    = fs.String("data", defaultDataDir, "directory of the SQLite files used when no database URL is set")
		httpAddr   = fs.String("http-addr", "127.0.0.1:8080", "address of the HTTP API, read models and page")
		brokerAddr = fs.String("broker-addr", defaultBrokerAddr, "loopback address of the embedded broker (another free port when taken)")
		relayF     = fs.RelayFlags()
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := fs.Logger(logOut)

	storeURL, readURL, err := databases(getenv, *dataDir, true)
	if err != nil {
		return err
	}

	// The broker: a real cluster when configured, else the embedded one.
	kcfg := kafkaenv.Config{ClientID: "esflow"}
	embedded := getenv(EnvKafkaBrokers) == ""
	if !embedded {
		var err error
		if kcfg, err = kafkaenv.FromEnv("esflow"); err != nil {
			return err
		}
	} else {
		b, err := startBroker(ctx, *brokerAddr, log)
		if err != nil {
			return err
		}
		defer func() { _ = b.Close() }()
		kcfg.Brokers = []string{b.Addr()}
	}

	reg := aggregate.NewRegistry()
	domain.Register(reg)
	app, err := application.New(ctx, application.Config{
		DatabaseURL:  storeURL,
		CipherKey:    getenv(application.EnvCipherKey),
		Registry:     reg,
		CreateTables: true,
		Outbox:       &outbox.Builder{},
		Logger:       log,
	})
	if err != nil {
		return err
	}
	defer func() { _ = app.Close() }()

	metrics := ops.NewRegistry()
	rcfg := relayservice.Config{Kafka: kcfg, Metrics: metrics, Logger: log}
	rcfg.SetFlags(relayF)
	rly, err := relayservice.New(app.Outbox(), rcfg)
	if err != nil {
		return err
	}
	defer func() { _ = rly.Close() }()

	if embedded {
		// The embedded broker starts empty: publish what the store holds
		// again before anything new, so its topics survive a restart.
		n, err := rly.Republish(ctx, app)
		if err != nil {
			return err
		}
		if n > 0 {
			log.Info("embedded broker: stored events published again", "events", n)
		}
	}

	proj, err := projector.Open(ctx, projector.Config{DatabaseURL: readURL, Kafka: kcfg, GroupPrefix: "esflow-", Metrics: metrics, Logger: log})
	if err != nil {
		return err
	}
	defer proj.Close()

	api, err := writer.New(writer.Config{
		App:         app,
		Token:       getenv(EnvWriterToken),
		Logger:      log,
		Registry:    metrics,
		Ready:       map[string]ops.Check{"projections": proj.Ready},
		Projections: consoleProjections{proj},
	})
	if err != nil {
		return err
	}
	domainapi.Mount(api) // the example domain, through the writer's public API
	mux := newMux(api, proj)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return rly.Run(gctx) })
	g.Go(func() error { return proj.Run(gctx) })
	g.Go(func() error {
		return ops.Serve(gctx, *httpAddr, mux, 10*time.Second, log, func(a net.Addr) {
			ep := Endpoints{HTTP: "http://" + a.String(), Broker: kcfg.Brokers[0]}
			printBanner(out, ep, storeURL, readURL, getenv(EnvWriterToken) != "")
			if ready != nil {
				ready(ep)
			}
		})
	})
	err = g.Wait()
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		log.Info("esflow stopped")
		return nil
	}
	return err
}

// startBroker starts the embedded broker on addr, or on a free port when
// addr is taken.
func startBroker(ctx context.Context, addr string, log *slog.Logger) (*broker.Broker, error) {
	b, err := broker.Start(ctx, broker.Config{Addr: addr})
	if err == nil {
		return b, nil
	}
	var opErr *net.OpError
	if !errors.As(err, &opErr) {
		return nil, err
	}
	log.Warn("broker address taken; using a free port", "addr", addr, "error", err)
	return broker.Start(ctx, broker.Config{})
}

func printBanner(w io.Writer, ep Endpoints, storeURL, readURL string, token bool) {
	auth := ""
	if token {
		auth = ` -H "Authorization: Bearer $WRITER_TOKEN"`
	}
	fmt.Fprintf(w, `
esflow is running.
  event store  %s
  read models  %s
  Kafka        %s
  console      %s/

Try:
  curl -s -X POST %s/v1/worlds -H 'Content-Type: application/json'%s -d '{"ruler":"gaia"}'
  curl -s %s/read/worlds
  kcat -b %s -C -t %s -f '%%k %%s\n'

Ctrl-C stops everything; the data stays for the next run.
`, redact(storeURL), redact(readURL), ep.Broker, ep.HTTP, ep.HTTP, auth, ep.HTTP, ep.Broker, "esflow.World")
}

// redact hides a URL's password.
func redact(u string) string {
	at := strings.LastIndex(u, "@")
	scheme := strings.Index(u, "://")
	if at < 0 || scheme < 0 {
		return u
	}
	userinfo := u[scheme+3 : at]
	if i := strings.Index(userinfo, ":"); i >= 0 {
		return u[:scheme+3] + userinfo[:i] + ":***" + u[at:]
	}
	return u
}

// newMux serves the read models under /read/ and everything else (the
// writer's API, the page, the ops endpoints) from the writer.
func newMux(api *writer.Server, proj *projector.Service) http.Handler {
	mux := http.NewServeMux()
	proj.Mount(mux, "/read")
	mux.Handle("/", api.Handler())
	return mux
}

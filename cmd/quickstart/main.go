// Command quickstart runs the seed pages' quick start on the embedded
// default: a World aggregate stored in a local SQLite file. Run it twice:
// the second run finds the first run's worlds.
//
//	go run ./cmd/quickstart                 # ./esflow-quickstart.db
//	DATABASE_URL=postgres://… go run ./cmd/quickstart
//
// Flags: -db (also ESFLOW_DB), and those of every esflow command:
// -log-level, -log-format, -version, -h.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/esflow/esflow/examples/domain"
	"github.com/esflow/esflow/internal/cli"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/eventstore"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	cli.Exit("quickstart", err)
}

// command describes the quick start for its -h.
var command = cli.Command{
	Name:    "quickstart",
	Summary: "Runs the quick start: saves a World aggregate, reads it back, shows optimistic concurrency and the notification log.",
	Env: []cli.Var{
		{Name: application.EnvDatabaseURL, Usage: "the event store (default sqlite://<-db>; alias DB_URI)"},
		{Name: application.EnvCipherKey, Usage: "base64 of 32 bytes: encrypt stored events"},
	},
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := cli.New(command, os.Getenv, out)
	dbFile := fs.String("db", "esflow-quickstart.db", "SQLite file used when DATABASE_URL is not set")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := fs.Logger(os.Stderr)
	cfg, err := application.ConfigFromEnv()
	if err != nil {
		return err
	}
	if cfg.DatabaseURL == "" {
		cfg.DatabaseURL = "sqlite://" + *dbFile
	}
	cfg.Logger = log
	cfg.Registry = aggregate.NewRegistry()
	domain.Register(cfg.Registry)
	app, err := application.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer app.Close()
	worlds := application.NewRepository(app.Store, func() *domain.World { return new(domain.World) })

	before, err := app.Recorder().MaxNotificationID(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "store: %s (%s), %d events already stored\n", cfg.DatabaseURL, app.Backend, before)

	world, err := domain.NewWorld("gods")
	if err != nil {
		return err
	}
	for _, what := range []string{"dinosaurs", "trucks", "internet"} {
		if err := world.MakeItSo(what); err != nil {
			return err
		}
	}
	if err := world.SetRuler("money"); err != nil {
		return err
	}
	if err := app.Save(ctx, world); err != nil {
		return err
	}
	fmt.Fprintf(out, "saved world %s at version %d\n", world.ID(), world.Version())

	copy, err := worlds.Get(ctx, world.ID())
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "retrieved: ruler=%s history=%v head verified=%v\n", copy.Ruler, copy.History, copy.Head() == world.Head())

	old, err := worlds.GetAt(ctx, world.ID(), 3)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "at version 3: ruler=%s history=%v\n", old.Ruler, old.History)
	old.MakeItSo("future")
	if err := app.Save(ctx, old); errors.Is(err, eventstore.ErrConcurrency) {
		fmt.Fprintln(out, "saving the old copy: concurrency error, as it should be")
	} else if err != nil {
		return err
	}

	reader := application.NewReader(app.Log, before, 100)
	items, err := reader.Read(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "notification log: %d new notifications, ids %d..%d\n", len(items), before+1, reader.Position)
	return nil
}

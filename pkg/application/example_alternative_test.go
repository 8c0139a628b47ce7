package application_test

import (
	"context"
	"fmt"
	"log"

	"github.com/esflow/esflow/examples/domain"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/eventstore"
)

// The seed page "Alternative schema": the same application, storing
// "stored events" — stored_events(aggregate_id, aggregate_version,
// event_type, state) — instead of sequenced items.
func Example_alternativeSchema() {
	ctx := context.Background()
	reg := aggregate.NewRegistry()
	domain.Register(reg)
	cfg, err := application.ConfigFromEnv() // no DATABASE_URL: SQLite in memory
	if err != nil {
		log.Fatal(err)
	}
	cfg.Registry = reg
	cfg.Schema = eventstore.StoredEventsSchema() // tables: stored_events, stored_events_snapshots
	app, err := application.New(ctx, cfg)        // creates the tables (cfg.CreateTables)
	if err != nil {
		log.Fatal(err)
	}
	defer app.Close()
	exampleRepository := application.NewRepository(app.Store, func() *domain.Example { return new(domain.Example) })

	// Create.
	example, _ := domain.NewExample("bar")
	app.Save(ctx, example)

	// Read.
	found, _ := exampleRepository.Contains(ctx, example.ID())
	got, _ := exampleRepository.Get(ctx, example.ID())
	fmt.Println(found, got.Foo)

	// Update.
	example.SetFoo("baz")
	app.Save(ctx, example)
	got, _ = exampleRepository.Get(ctx, example.ID())
	fmt.Println(got.Foo)

	// Delete.
	example.Discard()
	app.Save(ctx, example)
	found, _ = exampleRepository.Contains(ctx, example.ID())
	fmt.Println(found)

	// Output:
	// true bar
	// baz
	// false
}

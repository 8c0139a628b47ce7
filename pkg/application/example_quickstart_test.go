package application_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/esflow/esflow/examples/domain"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/eventstore"
)

// The seed page "Quick start": a World aggregate with an event-sourced
// ruler and a history, stored encrypted in SQLite, with optimistic
// concurrency, historical state, a verified hash chain and the
// notification log.
func Example_quickStart() {
	ctx := context.Background()

	// Generate a cipher key (optional). Keep it safe.
	cipherKey, err := eventstore.GenerateCipherKey()
	if err != nil {
		log.Fatal(err)
	}

	// Configure the environment.
	os.Setenv("CIPHER_KEY", cipherKey)        // optional: encrypt stored events
	os.Setenv("DB_URI", "sqlite:///:memory:") // or sqlite:///path, postgres://…
	defer os.Unsetenv("CIPHER_KEY")
	defer os.Unsetenv("DB_URI")

	reg := aggregate.NewRegistry()
	domain.Register(reg)
	app, err := application.NewFromEnv(ctx, reg)
	if err != nil {
		log.Fatal(err)
	}
	defer app.Close()
	worlds := application.NewRepository(app.Store, func() *domain.World { return new(domain.World) })

	// Create an aggregate and execute commands.
	world, _ := domain.NewWorld("gods")
	world.MakeItSo("dinosaurs")
	world.MakeItSo("trucks")
	version := world.Version() // note the version at this stage
	world.MakeItSo("internet")

	// Assign to the event-sourced attribute.
	world.SetRuler("money")

	// View the current state of the aggregate.
	fmt.Println("ruler:", world.Ruler)
	fmt.Println("history:", world.History)

	// Save the pending events.
	if err := app.Save(ctx, world); err != nil {
		log.Fatal(err)
	}

	// Retrieve the aggregate (replay stored events) and view its state.
	copy, err := worlds.Get(ctx, world.ID())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("retrieved:", copy.Ruler, copy.History)

	// Verify the retrieved state (cryptographically).
	fmt.Println("same head:", copy.Head() == world.Head())

	// Discard the aggregate: it is no longer found.
	world.Discard()
	app.Save(ctx, world)
	found, _ := worlds.Contains(ctx, world.ID())
	fmt.Println("found after discard:", found)
	if _, err := worlds.Get(ctx, world.ID()); errors.Is(err, application.ErrNotFound) {
		fmt.Println("get after discard: not found")
	}

	// Get the historical state at the version noted above.
	old, err := worlds.GetAt(ctx, world.ID(), version)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("at version", version, "history:", old.History, "ruler:", old.Ruler)

	// Optimistic concurrency control (no branches).
	old.MakeItSo("future")
	if err := app.Save(ctx, old); errors.Is(err, eventstore.ErrConcurrency) {
		fmt.Println("stale save: concurrency error")
	}

	// Check the data integrity of the domain events (replay checks it too).
	events, err := app.Store.Events(ctx, world.ID(), eventstore.StreamQuery{})
	if err != nil {
		log.Fatal(err)
	}
	lastHash := ""
	for _, e := range events {
		if e.PreviousHash != lastHash {
			log.Fatal("broken chain")
		}
		lastHash = e.Hash
	}

	// Verify the sequence of events (cryptographically).
	fmt.Println("chain ends at head:", lastHash == world.Head())

	// Project the application's event notifications.
	reader := application.NewReader(app.Log, 0, 10)
	notifications, err := reader.Read(ctx)
	if err != nil {
		log.Fatal(err)
	}
	var ids []uint64
	for _, n := range notifications {
		ids = append(ids, n.ID)
	}
	fmt.Println("notification ids:", ids)

	// Check the records are encrypted (values not visible in the database).
	records, _ := app.Recorder().ReadStream(ctx, world.ID(), eventstore.StreamQuery{})
	visible := false
	for _, r := range records {
		for _, word := range []string{"dinosaurs", "trucks", "internet"} {
			visible = visible || bytes.Contains(r.Data, []byte(word))
		}
	}
	fmt.Println("plaintext visible in records:", visible)

	// Output:
	// ruler: money
	// history: [dinosaurs trucks internet]
	// retrieved: money [dinosaurs trucks internet]
	// same head: true
	// found after discard: false
	// get after discard: not found
	// at version 3 history: [dinosaurs trucks] ruler: gods
	// stale save: concurrency error
	// chain ends at head: true
	// notification ids: [1 2 3 4 5 6]
	// plaintext visible in records: false
}

// The earlier seed page "Quick start" with the library's Example entity:
// create, read, update and delete.
func Example_quickStartCRUD() {
	ctx := context.Background()
	reg := aggregate.NewRegistry()
	domain.Register(reg)
	cfg, err := application.ConfigFromEnv() // no DATABASE_URL: SQLite in memory
	if err != nil {
		log.Fatal(err)
	}
	cfg.Registry = reg
	app, err := application.New(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer app.Close()
	examples := application.NewRepository(app.Store, func() *domain.Example { return new(domain.Example) })

	// Create.
	example, _ := domain.NewExample("bar")
	app.Save(ctx, example)

	// Read.
	found, _ := examples.Contains(ctx, example.ID())
	got, _ := examples.Get(ctx, example.ID())
	fmt.Println(found, got.Foo)

	// Update.
	example.SetFoo("baz")
	app.Save(ctx, example)
	got, _ = examples.Get(ctx, example.ID())
	fmt.Println(got.Foo)

	// Delete.
	example.Discard()
	app.Save(ctx, example)
	found, _ = examples.Contains(ctx, example.ID())
	fmt.Println(found)

	// Output:
	// true bar
	// baz
	// false
}

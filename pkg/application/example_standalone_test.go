package application_test

import (
	"bytes"
	"context"
	"fmt"
	"log"

	"github.com/esflow/esflow/examples/standalone"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/eventstore/sqlite"
)

// The seed page "Stand-alone example": a plain struct and a mutator
// function (package standalone), in-process publish/subscribe, and the
// infrastructure pieces used explicitly: a SQLite table of sequenced
// items, an event store, a repository and a persistence policy.
func Example_standAlone() {
	ctx := context.Background()
	bus := new(aggregate.Bus)

	// Subscribe to receive the events that will be published.
	var receivedEvents []aggregate.Event
	bus.Subscribe(func(_ context.Context, events ...aggregate.Event) error {
		receivedEvents = append(receivedEvents, events...)
		return nil
	})

	// Create a new entity using the factory.
	entity, _ := standalone.CreateNewExample(ctx, bus, "bar")
	fmt.Println("version:", entity.Version, "foo:", entity.Foo)
	created := receivedEvents[0]
	fmt.Printf("received: %d %T version %d same id %v\n", len(receivedEvents), created.Payload, created.Version, created.AggregateID == entity.ID)

	// Update property foo.
	entity.SetFoo(ctx, bus, "baz")
	changed := receivedEvents[1].Payload.(*aggregate.AttributeChanged)
	fmt.Println("version:", entity.Version, "foo:", entity.Foo)
	fmt.Println("received:", len(receivedEvents), receivedEvents[1].Version, changed.Name, changed.Value)

	// Infrastructure: a database table of sequenced items, in SQLite.
	records, err := sqlite.Open(ctx, "sqlite:///:memory:", sqlite.Config{Schema: eventstore.DefaultSchema()})
	if err != nil {
		log.Fatal(err)
	}
	defer records.Close()
	if err := records.Migrate(ctx); err != nil { // create the table
		log.Fatal(err)
	}

	// The event store maps domain events to sequenced items.
	eventStore := eventstore.MustNew(records, aggregate.NewRegistry(), eventstore.Options{})

	// The repository rebuilds entities with the mutator function.
	exampleRepository := application.NewEntityRepository(eventStore, standalone.Mutate)

	// Put each received event into the event store.
	for _, event := range receivedEvents {
		if err := eventStore.Append(ctx, event); err != nil {
			log.Fatal(err)
		}
	}
	storedEvents, _ := eventStore.Events(ctx, entity.ID, eventstore.StreamQuery{})
	fmt.Println("stored events:", len(storedEvents))

	// Retrieve the entity from the repository.
	retrieved, _ := exampleRepository.Get(ctx, entity.ID)
	fmt.Println("retrieved foo:", retrieved.Foo)

	// The sequenced items: stream id, position, topic and data.
	items, _ := records.ReadStream(ctx, entity.ID, eventstore.StreamQuery{})
	for _, item := range items {
		fmt.Println("item:", item.StreamID == entity.ID, item.Position, item.Topic,
			bytes.Contains(item.Data, []byte("bar")), bytes.Contains(item.Data, []byte("baz")))
	}

	// An application object with a persistence policy stores what is
	// published, so new entities are immediately in the repository.
	policy := application.NewPersistencePolicy(eventStore, bus)
	defer policy.Close()

	// Create.
	example, _ := standalone.CreateNewExample(ctx, bus, "bar")

	// Read.
	found, _ := exampleRepository.Contains(ctx, example.ID)
	got, _ := exampleRepository.Get(ctx, example.ID)
	fmt.Println("read:", found, got.Foo)

	// Update.
	example.SetFoo(ctx, bus, "baz")
	got, _ = exampleRepository.Get(ctx, example.ID)
	fmt.Println("updated:", got.Foo)

	// Delete: a discarded entity is not found.
	example.Discard(ctx, bus)
	found, _ = exampleRepository.Contains(ctx, example.ID)
	fmt.Println("found after discard:", found)

	// Output:
	// version: 1 foo: bar
	// received: 1 *aggregate.Created version 0 same id true
	// version: 2 foo: baz
	// received: 2 1 foo baz
	// stored events: 2
	// retrieved foo: baz
	// item: true 0 Created true false
	// item: true 1 AttributeChanged false true
	// read: true bar
	// updated: baz
	// found after discard: false
}

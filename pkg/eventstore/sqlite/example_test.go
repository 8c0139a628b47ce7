package sqlite_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/eventstore/sqlite"
)

func ExampleOpen() {
	ctx := context.Background()
	store, err := sqlite.Open(ctx, "sqlite::memory:", sqlite.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer store.Close()
	if err := store.Migrate(ctx); err != nil {
		fmt.Println(err)
		return
	}

	id := uuid.New()
	err = store.Append(ctx, []eventstore.Record{
		{StreamID: id, Position: 0, Topic: "Created", Data: []byte(`{"name":"x"}`)},
		{StreamID: id, Position: 1, Topic: "Renamed", Data: []byte(`{"name":"y"}`)},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	records, err := store.ReadStream(ctx, id, eventstore.StreamQuery{})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range records {
		fmt.Println(r.Position, r.Topic, string(r.Data))
	}
	// A stale writer loses.
	err = store.Append(ctx, []eventstore.Record{{StreamID: id, Position: 1, Topic: "Renamed", Data: []byte(`{}`)}})
	fmt.Println(errors.Is(err, eventstore.ErrConcurrency))
	// Output:
	// 0 Created {"name":"x"}
	// 1 Renamed {"name":"y"}
	// true
}

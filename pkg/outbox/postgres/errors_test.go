package postgres_test

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/esflow/esflow/pkg/eventstore"
	pgstore "github.com/esflow/esflow/pkg/eventstore/postgres"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/outbox/postgres"
)

// TestStoppedServerIsUnavailable: an outbox on a PostgreSQL address where
// no server listens fails its appends and the relay's reads with
// eventstore.ErrUnavailable.
func TestStoppedServerIsUnavailable(t *testing.T) {
	ctx := context.Background()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	pool, err := pgxpool.New(ctx, "postgres://esflow@"+addr+"/esflow?connect_timeout=5")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	store, err := pgstore.New(pool, pgstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	o, err := postgres.New(store, postgres.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	appendErr := o.AppendWithOutbox(ctx, []eventstore.Record{{StreamID: uuid.New(), Position: 0, Topic: "T", Data: []byte("{}")}},
		[]outbox.Message{{Topic: "t", Key: []byte("k"), Value: []byte("v")}})
	_, fetchErr := o.Fetch(ctx, outbox.Shard{}, 10)
	_, backlogErr := o.Backlog(ctx, outbox.Shard{})
	deleteErr := o.Delete(ctx, []int64{1})
	for name, err := range map[string]error{"append": appendErr, "fetch": fetchErr, "backlog": backlogErr, "delete": deleteErr} {
		if !errors.Is(err, eventstore.ErrUnavailable) {
			t.Errorf("%s on a stopped server: %v", name, err)
		}
	}
}

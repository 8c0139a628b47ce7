package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/esflow/esflow/internal/pgtest"
	"github.com/esflow/esflow/pkg/eventstore"
	pgstore "github.com/esflow/esflow/pkg/eventstore/postgres"
)

// TestAppendPlansUseTheStreamIndex checks the plans PostgreSQL caches for
// the append statements on a fresh table: the predecessor check must look
// the one row up in the stream key's index. An EXISTS here was planned,
// for 100-record batches, as a hashed subplan that read the whole events
// table on every append (measured: 277 scans reading 11 million rows in
// one 9-second point of esbench W1).
func TestAppendPlansUseTheStreamIndex(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dsn := pgtest.NewDatabase(t)
	store, err := pgstore.Open(ctx, dsn, pgstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	o, err := New(store, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if err := o.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())

	q := buildQueries(eventstore.Schema{}.WithDefaults(), "esflow_outbox")
	pgtest.RequireIndexLookups(t, ctx, conn, "events", "events_stream_key", map[string]string{
		"unnest":   q.appendBoth,
		"values1":  q.appendValues[1][1],
		"values8":  q.appendValues[maxValuesRows][maxValuesRows],
		"values8m": q.appendValues[maxValuesRows][0],
	})
}

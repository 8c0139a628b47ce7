package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/esflow/esflow/internal/pgtest"
)

// TestInsertPlanUsesTheStreamIndex checks the plan PostgreSQL caches for
// the append statement on a fresh table: the predecessor check must look
// the one row up in the stream key's index, never scan or hash the whole
// events table on every append (what an EXISTS subquery was planned as).
func TestInsertPlanUsesTheStreamIndex(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dsn := pgtest.NewDatabase(t)
	s, err := Open(ctx, dsn, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	pgtest.RequireIndexLookups(t, ctx, conn, "events", "events_stream_key",
		map[string]string{"insert": s.insertSQL, "conflict": s.conflictSQL})
}

package postgres_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/esflow/esflow/internal/pgtest"
	"github.com/esflow/esflow/pkg/eventstore"
	pgstore "github.com/esflow/esflow/pkg/eventstore/postgres"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/outbox/postgres"
)

// BenchmarkSave compares AppendWithOutbox (one event + one message) with
// a raw pgx single statement writing the same rows.
func BenchmarkSave(b *testing.B) {
	dsn := pgtest.NewDatabase(b)
	ctx := context.Background()
	o := openB(b, dsn)
	b.Run("AppendWithOutbox", func(b *testing.B) {
		b.SetParallelism(4)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				id := uuid.New()
				err := o.AppendWithOutbox(ctx, []eventstore.Record{{StreamID: id, Topic: "Created", Data: []byte(`{"a":1}`)}},
					[]outbox.Message{{Topic: "t", Key: []byte(id.String()), Value: []byte(`{"a":1}`)}})
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	pool := o.Events().Pool()
	raw := `WITH e AS (INSERT INTO events (sequence_id, position, topic, data) VALUES ($1, 0, 'Created', $2) RETURNING 1)
INSERT INTO esflow_outbox (topic, key, value, key_hash) SELECT 't', $3, $2, $4 FROM e`
	b.Run("RawPgx", func(b *testing.B) {
		b.SetParallelism(4)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				id := uuid.New()
				key := []byte(id.String())
				if _, err := pool.Exec(ctx, raw, pgtype.UUID{Bytes: id, Valid: true}, []byte(`{"a":1}`), key, outbox.KeyHash(key)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

func openB(b *testing.B, dsn string) *postgres.Outbox {
	b.Helper()
	ctx := context.Background()
	store, err := pgstore.Open(ctx, dsn, pgstore.Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(store.Close)
	o, err := postgres.New(store, postgres.Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(o.Close)
	if err := o.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	return o
}

package sqlite_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/eventstore"
	sqlstore "github.com/esflow/esflow/pkg/eventstore/sqlite"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/outbox/sqlite"
)

// TestBusyIsUnavailable: while another connection holds the database's
// write lock, an outbox append (events and messages in one transaction)
// and the relay's delete fail with eventstore.ErrUnavailable, and nothing
// is written; once the lock is gone both work.
func TestBusyIsUnavailable(t *testing.T) {
	ctx := context.Background()
	dsn := "sqlite://" + filepath.Join(t.TempDir(), "busy.db")
	holder := open(t, dsn, sqlite.Config{})
	store, err := sqlstore.Open(ctx, dsn, sqlstore.Config{BusyTimeout: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	o, err := sqlite.New(store, sqlite.Config{})
	if err != nil {
		t.Fatal(err)
	}
	recs := []eventstore.Record{{StreamID: uuid.New(), Position: 0, Topic: "T", Data: []byte("{}")}}
	msgs := []outbox.Message{{Topic: "t", Key: []byte("k"), Value: []byte("v")}}

	tx, err := holder.Events().BeginTx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.AppendWithOutbox(ctx, recs, msgs); !errors.Is(err, eventstore.ErrUnavailable) {
		t.Fatalf("append while locked: %v", err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if b, err := o.Backlog(ctx, outbox.Shard{}); err != nil || b.Messages != 0 {
		t.Fatalf("backlog after the refused append: %+v %v", b, err)
	}
	if err := o.AppendWithOutbox(ctx, recs, msgs); err != nil {
		t.Fatalf("append after the lock: %v", err)
	}
	fetched, err := o.Fetch(ctx, outbox.Shard{}, 10)
	if err != nil || len(fetched) != 1 {
		t.Fatalf("fetch: %v %v", fetched, err)
	}
	if tx, err = holder.Events().BeginTx(ctx); err != nil {
		t.Fatal(err)
	}
	if err := o.Delete(ctx, []int64{fetched[0].ID}); !errors.Is(err, eventstore.ErrUnavailable) {
		t.Fatalf("delete while locked: %v", err)
	}
	_ = tx.Rollback()
	if err := o.Delete(ctx, []int64{fetched[0].ID}); err != nil {
		t.Fatalf("delete after the lock: %v", err)
	}
}

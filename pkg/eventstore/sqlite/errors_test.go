package sqlite_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	msqlite "modernc.org/sqlite"

	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/eventstore/sqlite"
)

// TestBusyIsUnavailable holds the write lock of a database file from one
// store while another, with a short busy timeout, appends: SQLite answers
// SQLITE_BUSY, which the store reports as ErrUnavailable (the driver's
// error still reachable). Once the lock is released the append succeeds.
func TestBusyIsUnavailable(t *testing.T) {
	ctx := context.Background()
	dsn := "sqlite://" + filepath.Join(t.TempDir(), "busy.db")
	holder, err := sqlite.Open(ctx, dsn, sqlite.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	if err := holder.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	other, err := sqlite.Open(ctx, dsn, sqlite.Config{BusyTimeout: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	tx, err := holder.BeginTx(ctx) // BEGIN IMMEDIATE: the write lock
	if err != nil {
		t.Fatal(err)
	}
	batch := []eventstore.Record{{StreamID: uuid.New(), Position: 0, Topic: "T", Data: []byte("{}")}}
	err = other.Append(ctx, batch)
	var se *msqlite.Error
	if !errors.Is(err, eventstore.ErrUnavailable) || !errors.As(err, &se) {
		t.Fatalf("append while another connection writes: %v", err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := other.Append(ctx, batch); err != nil {
		t.Fatalf("append after the lock was released: %v", err)
	}
	// A conflict stays a conflict.
	if err := other.Append(ctx, batch); !errors.Is(err, eventstore.ErrConcurrency) || errors.Is(err, eventstore.ErrUnavailable) {
		t.Fatalf("second append at the same position: %v", err)
	}
}

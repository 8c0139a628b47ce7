package sqlite_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/esflow/esflow/pkg/eventstore"
	sqlstore "github.com/esflow/esflow/pkg/eventstore/sqlite"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/outbox/outboxtest"
	"github.com/esflow/esflow/pkg/outbox/sqlite"
)

func open(t *testing.T, dsn string, cfg sqlite.Config) *sqlite.Outbox {
	t.Helper()
	ctx := context.Background()
	store, err := sqlstore.Open(ctx, dsn, sqlstore.Config{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = store.Close() })
	o, err := sqlite.New(store, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := o.Migrate(ctx); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if err := o.Migrate(ctx); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	return o
}

func TestConformanceMemory(t *testing.T) {
	outboxtest.Run(t, func(t *testing.T) outboxtest.Backend {
		return open(t, ":memory:", sqlite.Config{})
	})
}

func TestConformanceFile(t *testing.T) {
	outboxtest.Run(t, func(t *testing.T) outboxtest.Backend {
		return open(t, filepath.Join(t.TempDir(), "es.db"), sqlite.Config{OutboxTable: "relay_outbox"})
	})
}

func TestConfigValidation(t *testing.T) {
	store, err := sqlstore.Open(context.Background(), ":memory:", sqlstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for _, cfg := range []sqlite.Config{{OutboxTable: "Bad"}, {OutboxTable: `x"y`}, {OutboxTable: "events"}} {
		if _, err := sqlite.New(store, cfg); !errors.Is(err, eventstore.ErrInvalidIdentifier) {
			t.Errorf("New(%+v) = %v, want ErrInvalidIdentifier", cfg, err)
		}
	}
	if _, err := sqlite.New(store, sqlite.Config{LeaseDuration: time.Second, RenewInterval: 2 * time.Second}); err == nil {
		t.Errorf("renew interval longer than the lease accepted")
	}
}

// TestLeaseAcrossStores: two stores (as two processes would) on one file
// share the lease table; an expired lease is taken over, and the old
// holder's lost channel closes on its next renewal.
func TestLeaseAcrossStores(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	path := filepath.Join(t.TempDir(), "es.db")
	cfg := sqlite.Config{LeaseDuration: 400 * time.Millisecond, RenewInterval: 100 * time.Millisecond, LockRetry: 20 * time.Millisecond}
	a := open(t, path, cfg)
	b := open(t, path, cfg)
	shard := outbox.Shard{Index: 1, Count: 2}
	lostA, releaseA, err := a.Lock(ctx, shard)
	if err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 700*time.Millisecond)
	defer cancelShort()
	if _, rel, err := b.Lock(short, shard); err == nil {
		rel()
		t.Fatal("b took a renewed lease")
	}
	select {
	case <-lostA:
		t.Fatal("a lost a lease it kept renewing")
	default:
	}
	// Steal the lease as a crashed-and-expired holder would let happen:
	// expire it by hand.
	if _, err := a.Events().DB().ExecContext(ctx, `UPDATE "esflow_outbox_leases" SET holder = 'someone-else'`); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lostA:
	case <-time.After(3 * time.Second):
		t.Fatal("lost not closed after the lease was taken")
	}
	releaseA() // must not delete the other holder's row
	if _, err := a.Events().DB().ExecContext(ctx, `UPDATE "esflow_outbox_leases" SET expires_at = 0`); err != nil {
		t.Fatal(err)
	}
	lostB, releaseB, err := b.Lock(ctx, shard)
	if err != nil {
		t.Fatalf("b after expiry: %v", err)
	}
	defer releaseB()
	select {
	case <-lostB:
		t.Fatal("b's lease lost")
	case <-time.After(300 * time.Millisecond):
	}
}

package postgres_test

import (
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/esflow/esflow/internal/pgtest"
	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/outbox/postgres"
)

// TestLeaseFencesTheOldOwner drops the lock session of a shard's owner
// (as a network failure or an operator would) and checks the lease rule:
// the successor's LockFenced returns only after the old owner's fence
// has failed, so their produce requests cannot overlap, and the old
// owner learns it lost the shard.
func TestLeaseFencesTheOldOwner(t *testing.T) {
	ctx := testCtx(t)
	dsn := pgtest.NewDatabase(t)
	cfg := postgres.Config{Lease: time.Second, PingInterval: 200 * time.Millisecond, LockRetry: 20 * time.Millisecond}
	a := open(t, dsn, cfg, eventstore.Schema{})
	b := open(t, dsn, cfg, eventstore.Schema{})

	fa, lostA, releaseA, err := a.LockFenced(ctx, outbox.Shard{})
	if err != nil {
		t.Fatal(err)
	}
	defer releaseA()
	if err := fa.Check(); err != nil {
		t.Fatalf("fresh lease: %v", err)
	}

	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var gen1 int64
	var pid int32
	if err := conn.QueryRow(ctx, `SELECT generation, holder_pid FROM esflow_outbox_lease`).Scan(&gen1, &pid); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatal(err)
	}

	fb, _, releaseB, err := b.LockFenced(ctx, outbox.Shard{})
	if err != nil {
		t.Fatal(err)
	}
	defer releaseB()
	// The old owner's fence has failed by the time the successor may
	// publish: the order of the two facts, not a duration, is the rule.
	if err := fa.Check(); !errors.Is(err, outbox.ErrFenced) {
		t.Fatalf("old owner's fence after the takeover: %v, want ErrFenced", err)
	}
	if err := fb.Check(); err != nil {
		t.Fatalf("new owner's fence: %v", err)
	}
	var gen2 int64
	if err := conn.QueryRow(ctx, `SELECT generation FROM esflow_outbox_lease`).Scan(&gen2); err != nil || gen2 != gen1+1 {
		t.Fatalf("generation after takeover = %d, %v; want %d", gen2, err, gen1+1)
	}
	select {
	case <-lostA:
	case <-time.After(10 * time.Second):
		t.Fatal("the old owner's lost channel stayed open")
	}
}

func TestLeaseConfig(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	store := open(t, dsn, postgres.Config{}, eventstore.Schema{}).Events()
	if _, err := postgres.New(store, postgres.Config{Lease: time.Second, PingInterval: time.Second}); err == nil {
		t.Error("a lease shorter than two renewals was accepted")
	}
}

package postgres_test

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/esflow/esflow/internal/pgtest"
	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/eventstore/postgres"
)

// TestDeadlockIsUnavailable provokes a real deadlock (two transactions
// locking two rows in opposite orders): PostgreSQL aborts one with 40P01,
// which TranslateError marks retryable, keeping the PgError as the cause.
func TestDeadlockIsUnavailable(t *testing.T) {
	ctx := testCtx(t)
	dsn := pgtest.NewDatabase(t)
	a, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(ctx)
	b, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	if _, err := a.Exec(ctx, "CREATE TABLE pair (id int PRIMARY KEY, v int); INSERT INTO pair VALUES (1, 0), (2, 0)"); err != nil {
		t.Fatal(err)
	}
	txA, err := a.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer txA.Rollback(ctx)
	txB, err := b.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer txB.Rollback(ctx)
	mustExec := func(tx pgx.Tx, sql string) {
		if _, err := tx.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	mustExec(txA, "UPDATE pair SET v = 1 WHERE id = 1")
	mustExec(txB, "UPDATE pair SET v = 1 WHERE id = 2")
	errA := make(chan error, 1)
	go func() {
		_, err := txA.Exec(ctx, "UPDATE pair SET v = 2 WHERE id = 2")
		if err != nil {
			_ = txA.Rollback(ctx) // releases row 1 for B when A is the victim
		}
		errA <- err
	}()
	_, errB := txB.Exec(ctx, "UPDATE pair SET v = 2 WHERE id = 1")
	if errB != nil {
		_ = txB.Rollback(ctx)
	}
	victim := errB
	if errB == nil {
		victim = <-errA
	} else if err := <-errA; err != nil {
		t.Fatalf("both transactions failed: %v / %v", err, errB)
	}
	var pe *pgconn.PgError
	if !errors.As(victim, &pe) || pe.Code != "40P01" {
		t.Fatalf("want a deadlock, got %v", victim)
	}
	got := postgres.TranslateError(victim)
	if !errors.Is(got, eventstore.ErrUnavailable) || !errors.As(got, &pe) {
		t.Fatalf("TranslateError(deadlock) = %v", got)
	}
	_ = txA.Rollback(ctx)
	_ = txB.Rollback(ctx)
	// A constraint violation is the caller's problem, not the database's.
	if _, err := a.Exec(ctx, "INSERT INTO pair VALUES (1, 0)"); err == nil || errors.Is(postgres.TranslateError(err), eventstore.ErrUnavailable) {
		t.Fatalf("duplicate key translated as unavailable: %v", err)
	}
}

// TestStoppedServerIsUnavailable points a store at a port where no server
// listens (a stopped database): every operation fails with ErrUnavailable,
// the driver's error still reachable; and at a pool closed under it.
func TestStoppedServerIsUnavailable(t *testing.T) {
	ctx := testCtx(t)
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
	s, err := postgres.New(pool, postgres.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	id := uuid.New()
	_, readErr := s.ReadStream(ctx, id, eventstore.StreamQuery{})
	appendErr := s.Append(ctx, []eventstore.Record{{StreamID: id, Position: 0, Topic: "T", Data: []byte("{}")}})
	_, maxErr := s.MaxNotificationID(ctx)
	for name, err := range map[string]error{"read": readErr, "append": appendErr, "max notification id": maxErr} {
		var ce *pgconn.ConnectError
		if !errors.Is(err, eventstore.ErrUnavailable) || !errors.As(err, &ce) {
			t.Errorf("%s on a stopped server: %v", name, err)
		}
	}

	// A store whose pool was closed under it is closed: ErrClosed.
	live := openStore(t, pgtest.NewDatabase(t), postgres.Config{})
	live.Pool().Close()
	if _, err := live.ReadStream(context.Background(), id, eventstore.StreamQuery{}); !errors.Is(err, eventstore.ErrClosed) {
		t.Errorf("read on a closed pool: %v", err)
	}
}

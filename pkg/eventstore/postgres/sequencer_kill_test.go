package postgres_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/esflow/esflow/internal/pgtest"
	"github.com/esflow/esflow/internal/proctest"
	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/eventstore/postgres"
)

// childDSN, when set, makes TestSequencerChild the child process of
// TestKilledSequencerIsReplaced.
const childDSN = "ESFLOW_TEST_SEQUENCER_CHILD_DSN"

// TestKilledSequencerIsReplaced: the process holding the table's
// sequencer lock is killed with SIGKILL while it appends. PostgreSQL ends
// its session, and with it the lock; a standby in this process takes
// over, numbers what the dead process committed, and goes on. At the end
// every event has exactly one id, the ids are 1..N, and each
// transaction's ids are one run. The take-over time is printed.
func TestKilledSequencerIsReplaced(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := testCtx(t)
	child := proctest.Start(t, proctest.Command{
		Name: "sequencer-child", Path: os.Args[0],
		Args: []string{"-test.run=^TestSequencerChild$", "-test.v"},
		Env:  []string{childDSN + "=" + dsn},
	})
	child.WaitOutput(t, "child: active and appending", 30*time.Second)

	standby := &activity{}
	s := openStore(t, dsn, postgres.Config{Hooks: standby, SequencerTakeover: 20 * time.Millisecond})
	// A write of this process, so both stores' appends are in the log.
	if err := s.Append(ctx, []eventstore.Record{rec(uuid.New(), 0, "Parent")}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if standby.active.Load() {
		t.Fatal("the standby took the lock while the child held it")
	}
	child.Kill(t)
	killed := time.Now()
	waitFor(t, "standby active after the kill", standby.active.Load)
	took := time.Since(killed)
	for i := range 20 {
		b := batchOf(1+i%3, 2)
		if err := s.Append(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sequence(ctx); err != nil {
		t.Fatal(err)
	}
	var events, numbered, maxID, brokenTx int64
	err := s.Pool().QueryRow(ctx, `SELECT
    (SELECT count(*) FROM events),
    (SELECT count(*) FROM events_notifications),
    (SELECT coalesce(max(notification_id), 0) FROM events_notifications),
    (SELECT count(*) FROM (
        SELECT e.tx_id FROM events e JOIN events_notifications n USING (seq)
        GROUP BY e.tx_id HAVING max(n.notification_id) - min(n.notification_id) + 1 <> count(*)) b)`).
		Scan(&events, &numbered, &maxID, &brokenTx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("standby active %v after the SIGKILL; %d events, %d numbered", took.Round(time.Millisecond), events, numbered)
	if numbered != events || maxID != events || brokenTx != 0 {
		t.Fatalf("events %d, numbered %d, max id %d, transactions split %d", events, numbered, maxID, brokenTx)
	}
}

// TestSequencerChild is the killed process of
// TestKilledSequencerIsReplaced; it runs only as that child.
func TestSequencerChild(t *testing.T) {
	dsn := os.Getenv(childDSN)
	if dsn == "" {
		t.Skip("runs as the child of TestKilledSequencerIsReplaced")
	}
	ctx := context.Background()
	a := &activity{}
	s, err := postgres.Open(ctx, dsn, postgres.Config{Hooks: a})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "child sequencer active", a.active.Load)
	fmt.Println("child: active and appending")
	for i := 0; ; i++ { // until killed
		if err := s.Append(ctx, batchOf(1+i%4, 2)); err != nil {
			t.Fatal(err)
		}
	}
}

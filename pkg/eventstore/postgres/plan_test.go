package postgres

import (
	"context"
	"strings"
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
	ctx, s, conn := planSetup(t)
	pgtest.RequireIndexLookups(t, ctx, conn, "events", "events_stream_key",
		map[string]string{"insert": s.insertSQL, "conflict": s.conflictSQL})
}

// TestLogPlansUseIndexes checks the generic plans of the sequencer step,
// the readers' pending check and the log read on a fresh table: each
// reaches events and the notifications table through an index only.
// Without the scalar-subquery form of "not yet numbered", the step read
// the whole notifications table into a hash on every execution.
//
// The step must also join nothing: on a fresh table its generic plan
// joined the pending rows with the chosen transactions by a nested loop
// (both estimated at one row), quadratic in the rows of a step, and the
// sequencer keeps the plan its connection cached; a step that met a
// backlog then ran for tens of seconds (esbench W7 under W1 c=32).
func TestLogPlansUseIndexes(t *testing.T) {
	ctx, s, conn := planSetup(t)
	check := func(when string) {
		for name, sql := range map[string]string{
			"step": s.stepSQL, "pending": s.pendingSQL, "read": s.notifSQL, "read topics": s.notifTopicsSQL,
		} {
			plan, err := pgtest.GenericPlan(ctx, conn, sql)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			bads := []string{"Seq Scan on events ", "Seq Scan on events\n", "Seq Scan on events_notifications", "Hash Anti Join", "hashed"}
			if name == "step" {
				bads = append(bads, "Nested Loop", "Hash Join", "Merge Join")
			}
			for _, bad := range bads {
				if strings.Contains(plan+"\n", bad) {
					t.Errorf("%s, %s: plan has %q:\n%s", when, name, strings.TrimSpace(bad), plan)
				}
			}
		}
	}
	check("fresh table")
	// A few rows, not analyzed: what a new deployment's sequencer plans
	// its first steps with.
	if _, err := conn.Exec(ctx, `INSERT INTO events (sequence_id, position, topic, data)
SELECT gen_random_uuid(), 0, 'T', '' FROM generate_series(1, 300)`); err != nil {
		t.Fatal(err)
	}
	check("300 rows")
	// And once the tables are big and analyzed.
	if _, err := conn.Exec(ctx, `INSERT INTO events (sequence_id, position, topic, data)
SELECT gen_random_uuid(), 0, 'T', '' FROM generate_series(1, 20000);
INSERT INTO events_notifications SELECT seq, seq FROM events;
ANALYZE events; ANALYZE events_notifications`); err != nil {
		t.Fatal(err)
	}
	check("20,000 rows")
}

// planSetup returns a migrated store that does not sequence and a
// connection of its own to its fresh database.
func planSetup(t *testing.T) (context.Context, *Store, *pgx.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	dsn := pgtest.NewDatabase(t)
	s, err := Open(ctx, dsn, Config{NoSequencer: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return ctx, s, conn
}

package postgres

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/esflow/esflow/internal/pgtest"
	"github.com/esflow/esflow/pkg/eventstore"
)

// BenchmarkStepOverBacklog times one sequencer step that numbers a
// backlog of rows records (transactions of 10) with the plan a
// long-lived sequencer connection caches: generic, and made while the
// table was small, as in a new deployment's first steps (inserts do not
// make PostgreSQL plan again). Each iteration removes the ids and puts
// the baseline back (DELETE and UPDATE, which keep the cached plan), so
// every step numbers the same backlog.
func BenchmarkStepOverBacklog(b *testing.B) {
	for _, rows := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("rows=%d", rows), func(b *testing.B) {
			ctx := context.Background()
			dsn := pgtest.NewDatabase(b)
			s, err := Open(ctx, dsn, Config{NoSequencer: true})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			if err := s.Migrate(ctx); err != nil {
				b.Fatal(err)
			}
			cfg, err := pgx.ParseConfig(dsn)
			if err != nil {
				b.Fatal(err)
			}
			cfg.RuntimeParams["plan_cache_mode"] = "force_generic_plan"
			conn, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close(context.Background())
			step := func() int64 {
				base, err := readBaseline(ctx, conn, s.baselineSQL)
				if err != nil {
					b.Fatal(err)
				}
				var n, txs, backlog int64
				var next string
				if err := conn.QueryRow(ctx, s.stepSQL, int64(DefaultSequencerBatch), base.text, base.xmax, base.xip).
					Scan(&n, &txs, &backlog, &next); err != nil {
					b.Fatal(err)
				}
				return n
			}
			var initial string
			if err := conn.QueryRow(ctx, `SELECT baseline::text FROM `+s.names.SequencerState).Scan(&initial); err != nil {
				b.Fatal(err)
			}
			step() // plans (and caches) the step on the empty table
			for i := 0; i < rows; i += 10 {
				batch := make([]eventstore.Record, 10)
				for j := range batch {
					batch[j] = record(uuid.New(), 0)
				}
				if err := s.Append(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			for b.Loop() {
				b.StopTimer()
				if _, err := conn.Exec(ctx, `DELETE FROM `+s.names.Notifications); err != nil {
					b.Fatal(err)
				}
				if _, err := conn.Exec(ctx, `UPDATE `+s.names.SequencerState+` SET baseline = $1::text::pg_snapshot`, initial); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if n := step(); n != int64(rows) {
					b.Fatalf("step numbered %d of %d", n, rows)
				}
			}
		})
	}
}

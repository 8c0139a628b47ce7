package projection_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/esflow/esflow/internal/pgtest"
	"github.com/esflow/esflow/pkg/projection"
)

// BenchmarkDrainPostgres measures draining 24k pre-produced events (2,000
// worlds x 12 events over 8 partitions) into PostgreSQL with tracking,
// from the runner's start to the last event applied.
//
//	go test -run '^$' -bench DrainPostgres -benchtime 3x ./pkg/projection/
func BenchmarkDrainPostgres(b *testing.B) { benchmarkDrain(b, 2000, 12) }

// BenchmarkDrainPostgresLarge is BenchmarkDrainPostgres in the shape of
// esbench's W4: 100k events, 10,000 worlds x 10, so that tracking grows
// to 10,000 rows during the run.
//
//	go test -run '^$' -bench DrainPostgresLarge -benchtime 1x -count 6 ./pkg/projection/
func BenchmarkDrainPostgresLarge(b *testing.B) { benchmarkDrain(b, 10000, 10) }

func benchmarkDrain(b *testing.B, worlds, perWorld int) {
	brk := startBroker(b)
	msgs := messages(b, flatten(worldEvents(b, worlds, perWorld)))
	produce(b, newWriter(b, brk.Addr()), msgs)
	b.ResetTimer()
	var total time.Duration
	for i := range b.N {
		b.StopTimer()
		db := openPostgres(b)
		cfg := config(brk)
		cfg.GroupID = "bench" + string(rune('a'+i))
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		r, err := projection.NewRunner(db, newCounts("bench"), cfg)
		if err != nil {
			b.Fatal(err)
		}
		if err := r.Setup(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		stop := run(b, r)
		eventually(b, "drain", 120*time.Second, func() bool { return r.Status().Applied == uint64(len(msgs)) })
		total += time.Since(start)
		b.StopTimer()
		if err := stop(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(msgs)*b.N)/total.Seconds(), "events/s")
}

// BenchmarkRebuildPostgres measures a rebuild of the batch-handler test
// projection (newCounts) into PostgreSQL from 24k events (2,000 worlds x
// 12): from the event store (PostgreSQL notification log, decoded through
// the Mapper) and from the topic's earliest offsets (8 partitions),
// including the swap.
//
//	go test -run '^$' -bench RebuildPostgres -benchtime 3x ./pkg/projection/
func BenchmarkRebuildPostgres(b *testing.B) {
	const worlds, perWorld = 2000, 12
	ctx := context.Background()
	p := newPipeline(b, pgtest.NewDatabase(b))
	groups := worldEvents(b, worlds, perWorld)
	// Append the events straight to the store, 100 worlds per transaction.
	all := flatten(groups)
	for i := 0; i < len(all); i += 100 * perWorld {
		if err := p.app.Store.Append(ctx, all[i:min(i+100*perWorld, len(all))]...); err != nil {
			b.Fatal(err)
		}
	}
	if err := p.pump(ctx); err != nil {
		b.Fatal(err)
	}
	db := openPostgres(b)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, src := range []struct {
		name string
		s    projection.RebuildSource
	}{{"store", projection.StoreSource{Store: p.app.Store}}, {"kafka", projection.KafkaSource{}}} {
		b.Run(src.name, func(b *testing.B) {
			var total time.Duration
			for range b.N {
				cfg := config(p.b)
				cfg.Logger = quiet
				start := time.Now()
				res, err := projection.Rebuild(ctx, db, newCounts("bench"), projection.RebuildConfig{Source: src.s, Runner: cfg})
				if err != nil {
					b.Fatal(err)
				}
				total += time.Since(start)
				if res.Applied != uint64(len(all)) {
					b.Fatalf("applied %d, want %d", res.Applied, len(all))
				}
			}
			b.ReportMetric(float64(len(all)*b.N)/total.Seconds(), "events/s")
		})
	}
}

package projection_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/esflow/esflow/pkg/projection"
)

// BenchmarkDrainPostgres measures draining 24k pre-produced events (2,000
// worlds x 12 events over 8 partitions) into PostgreSQL with tracking,
// from the runner's start to the last event applied.
//
//	go test -run '^$' -bench DrainPostgres -benchtime 3x ./pkg/projection/
func BenchmarkDrainPostgres(b *testing.B) {
	const worlds, perWorld = 2000, 12
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

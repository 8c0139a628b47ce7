package projection_test

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/projection"
)

// BenchmarkVisibleLatencyPostgres measures the projector's share of
// commit → visible: events produced at a steady 500/s (one new world
// each, 4 producers on a fixed schedule, 4 s) and, per event, the time
// from the broker's acknowledgement to the runner's Applied hook after
// the commit of the transaction that applied it. Reported as p50/p99/max
// in ms; the relay's share (commit → broker) is not included.
//
//	go test -run '^$' -bench VisibleLatency -benchtime 1x -count 6 ./pkg/projection/
func BenchmarkVisibleLatencyPostgres(b *testing.B) {
	const rate, n = 500, 2000
	brk := startBroker(b)
	w := newWriter(b, brk.Addr())
	db := openPostgres(b)
	cfg := config(brk)
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	vis := &visible{at: map[uuid.UUID]time.Time{}}
	cfg.Hooks = vis
	r, err := projection.NewRunner(db, &visibleCounts{newCounts("latency"), vis}, cfg)
	if err != nil {
		b.Fatal(err)
	}
	run(b, r)
	// Warm up: the group has joined and the first batches are applied.
	warm := messages(b, flatten(worldEvents(b, 10, 1)))
	produce(b, w, warm)
	eventually(b, "warm-up", 60*time.Second, func() bool { return r.Status().Applied == uint64(len(warm)) })
	var all []time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		evs := flatten(worldEvents(b, n, 1))
		msgs := messages(b, evs)
		want := r.Status().Applied + n
		b.StartTimer()
		var mu sync.Mutex
		acked := make(map[uuid.UUID]time.Time, n)
		jobs := make(chan int, n)
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for i := range jobs {
					if err := w.WriteMessages(context.Background(), msgs[i]); err != nil {
						b.Error(err)
						return
					}
					now := time.Now()
					mu.Lock()
					acked[evs[i].AggregateID] = now
					mu.Unlock()
				}
			})
		}
		start := time.Now()
		for i := range n {
			time.Sleep(time.Until(start.Add(time.Duration(i) * time.Second / rate)))
			jobs <- i
		}
		close(jobs)
		wg.Wait()
		eventually(b, "all applied", 60*time.Second, func() bool { return r.Status().Applied >= want })
		b.StopTimer()
		vis.mu.Lock()
		for id, t := range acked {
			all = append(all, max(vis.at[id].Sub(t), 0))
		}
		vis.mu.Unlock()
	}
	slices.Sort(all)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(all[len(all)/2]), "p50-ms")
	b.ReportMetric(ms(all[min(len(all)*99/100, len(all)-1)]), "p99-ms")
	b.ReportMetric(ms(all[len(all)-1]), "max-ms")
}

// visible stamps when each aggregate became visible: the projection
// notes a batch's aggregates while its transaction is open, the Applied
// hook (after the commit) stamps them.
type visible struct {
	projection.NoHooks
	mu      sync.Mutex
	pending []uuid.UUID
	at      map[uuid.UUID]time.Time
}

func (v *visible) Applied(int, time.Duration) {
	now := time.Now()
	v.mu.Lock()
	for _, id := range v.pending {
		if _, ok := v.at[id]; !ok {
			v.at[id] = now
		}
	}
	v.pending = v.pending[:0]
	v.mu.Unlock()
}

type visibleCounts struct {
	*counts
	v *visible
}

func (c *visibleCounts) HandleBatch(ctx context.Context, tx projection.Tx, t projection.Tables, events []projection.Event) error {
	if err := c.counts.HandleBatch(ctx, tx, t, events); err != nil {
		return err
	}
	c.v.mu.Lock()
	for _, e := range events {
		c.v.pending = append(c.v.pending, e.AggregateID)
	}
	c.v.mu.Unlock()
	return nil
}

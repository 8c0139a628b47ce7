package relay_test

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/esflow/esflow/examples/domain"
	"github.com/esflow/esflow/internal/pgtest"
	"github.com/esflow/esflow/internal/proccpu"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/relay"
	"github.com/esflow/esflow/pkg/relay/kafkapub"
)

// BenchmarkDrainWAL is BenchmarkDrain in the WAL outbox mode: the
// backlog is written by saves (outside the timer) while no relay
// streams, so the replication slot holds it, and one drain is timed from
// the relay's start until every message was acknowledged. The CPU of the
// database side is that of the backends of this database, the decoding
// walsender among them.
func BenchmarkDrainWAL(b *testing.B) {
	const (
		backlog = 50_000
		perAgg  = 100
	)
	ctx := context.Background()
	dsn := pgtest.NewDatabase(b)
	reg := aggregate.NewRegistry()
	domain.Register(reg)
	app, err := application.New(ctx, application.Config{DatabaseURL: dsn, Registry: reg, CreateTables: true,
		Outbox: &outbox.Builder{}, OutboxMode: application.OutboxWAL})
	if err != nil {
		b.Fatal(err)
	}
	defer app.Close()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()

	addr, brokerPID := startBrokerProcess(b)
	kc := &kafka.Client{Addr: kafka.TCP(addr)}
	if _, err := kc.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: "esflow.World", NumPartitions: 8, ReplicationFactor: 1}}}); err != nil {
		b.Fatal(err)
	}
	pub, err := kafkapub.New(kafkapub.Config{Brokers: []string{addr}, AutoCreateTopics: true, Partitions: 8})
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	box := app.Outbox()
	if _, ok := box.(relay.ExceptFetcher); !ok {
		b.Fatal("the WAL source is no relay.ExceptFetcher")
	}
	var published atomic.Int64
	drained := make(chan struct{}, 1)
	src := &timedSource{Source: box}
	tpub := &timedPublisher{Publisher: pub}
	r, err := relay.New(src, tpub, relay.Config{
		Locker: box, Waker: box, Logger: slog.New(slog.DiscardHandler),
		Hooks: relay.Hooks{Published: func(k int, _, _ time.Duration) {
			if published.Add(int64(k)) == backlog {
				drained <- struct{}{}
			}
		}},
	})
	if err != nil {
		b.Fatal(err)
	}
	what := strings.Repeat("x", 120)
	var total, cpu, pgCPU, brokerCPU time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		for range backlog / perAgg {
			w, err := domain.NewWorld("gods")
			if err != nil {
				b.Fatal(err)
			}
			for range perAgg - 1 {
				if err := w.MakeItSo(what); err != nil {
					b.Fatal(err)
				}
			}
			if err := app.Save(ctx, w); err != nil {
				b.Fatal(err)
			}
		}
		published.Store(0)
		src.reset()
		tpub.reset()
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		b.StartTimer()
		cpu0, broker0 := proccpu.Self(), proccpu.PIDs(brokerPID)
		var pg0 time.Duration
		start := time.Now()
		go func() { done <- r.Run(rctx) }()
		select {
		case <-drained:
		case err := <-done:
			b.Fatalf("relay stopped: %v", err)
		case <-time.After(2 * time.Minute):
			b.Fatal("relay did not drain the backlog in 2 minutes")
		}
		total += time.Since(start)
		cpu += proccpu.Self() - cpu0
		// The walsender starts with the relay: its CPU is all the drain's.
		pgCPU += proccpu.PIDs(backendPIDs(b, pool)...) - pg0
		brokerCPU += proccpu.PIDs(brokerPID) - broker0
		b.StopTimer()
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*backlog)/total.Seconds(), "events/s")
	perDrain := func(ns int64) float64 { return float64(ns) / 1e6 / float64(b.N) }
	b.ReportMetric(perDrain(src.fetch.Load()), "fetch-ms")
	b.ReportMetric(perDrain(tpub.publish.Load()), "publish-ms")
	b.ReportMetric(perDrain(src.del.Load()), "delete-ms")
	b.ReportMetric(float64(src.fetches.Load())/float64(b.N), "fetches")
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "relay-cpu-ms")
	b.ReportMetric(float64(pgCPU.Microseconds())/1000/float64(b.N), "pg-cpu-ms")
	b.ReportMetric(float64(brokerCPU.Microseconds())/1000/float64(b.N), "broker-cpu-ms")
}

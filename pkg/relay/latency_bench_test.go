package relay_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/esflow/esflow/examples/domain"
	"github.com/esflow/esflow/internal/pgtest"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/broker"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/relay"
	"github.com/esflow/esflow/pkg/relay/kafkapub"
)

// BenchmarkCommitToConsumer measures the time from a save's commit to its
// event's receipt by a Kafka consumer, at a steady 200 saves/s, with the
// relay woken by LISTEN/NOTIFY ("notify") or polling every 20ms ("poll").
// It reports p50/p99/max in milliseconds.
func BenchmarkCommitToConsumer(b *testing.B) {
	for _, mode := range []string{"notify", "poll"} {
		b.Run(mode, func(b *testing.B) {
			ctx := context.Background()
			reg := aggregate.NewRegistry()
			domain.Register(reg)
			app, err := application.New(ctx, application.Config{DatabaseURL: pgtest.NewDatabase(b), Registry: reg, CreateTables: true, Outbox: &outbox.Builder{}})
			if err != nil {
				b.Fatal(err)
			}
			defer app.Close()
			brk, _ := broker.Start(ctx, broker.Config{Partitions: 8, Topics: []string{"esflow.World"}})
			defer brk.Close()
			pub, _ := kafkapub.New(kafkapub.Config{Brokers: []string{brk.Addr()}})
			defer pub.Close()
			box := app.Outbox()
			cfg := relay.Config{Locker: box}
			if mode == "notify" {
				cfg.Waker = box
			}
			r, _ := relay.New(box, pub, cfg)
			rctx, cancel := context.WithCancel(ctx)
			defer cancel()
			go r.Run(rctx)

			var mu sync.Mutex
			committed := map[uuid.UUID]time.Time{}
			var lat []time.Duration
			rd := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{brk.Addr()}, GroupID: "lat-" + uuid.NewString(), Topic: "esflow.World",
				StartOffset: kafka.FirstOffset, CommitInterval: time.Second, MaxWait: 5 * time.Millisecond, ReadBatchTimeout: 5 * time.Millisecond,
				ReadBackoffMin: time.Millisecond, ReadBackoffMax: 5 * time.Millisecond})
			defer rd.Close()
			go func() {
				for {
					m, err := rd.ReadMessage(rctx)
					if err != nil {
						return
					}
					env, err := outbox.DecodeEnvelope(m.Value)
					if err != nil {
						continue
					}
					now := time.Now()
					mu.Lock()
					if t, ok := committed[env.AggregateID]; ok {
						lat = append(lat, now.Sub(t))
						delete(committed, env.AggregateID)
					}
					mu.Unlock()
				}
			}()
			time.Sleep(500 * time.Millisecond) // group join
			b.ResetTimer()
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
			for range b.N {
				<-tick.C
				w, _ := domain.NewWorld("gods")
				if err := app.Save(ctx, w); err != nil {
					b.Fatal(err)
				}
				mu.Lock()
				committed[w.ID()] = time.Now()
				mu.Unlock()
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				mu.Lock()
				n := len(lat)
				mu.Unlock()
				if n >= b.N || time.Now().After(deadline) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			b.StopTimer()
			mu.Lock()
			defer mu.Unlock()
			if len(lat) == 0 {
				b.Fatal("nothing received")
			}
			slices.Sort(lat)
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
			b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
			b.ReportMetric(ms(lat[len(lat)*99/100]), "p99-ms")
			b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}

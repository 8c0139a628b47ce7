package mysql_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/uuid"

	"github.com/esflow/esflow/internal/mysqltest"
	"github.com/esflow/esflow/pkg/eventstore"
	mysqlstore "github.com/esflow/esflow/pkg/eventstore/mysql"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/outbox/mysql"
)

// BenchmarkAppendWithOutbox measures one event plus its outbox message per
// transaction, at c goroutines per core. Run with -run '^$' -bench .
func BenchmarkAppendWithOutbox(b *testing.B) {
	for _, c := range []int{1, 8} {
		b.Run(fmt.Sprintf("c=%d", c), func(b *testing.B) {
			ctx := context.Background()
			store, err := mysqlstore.Open(ctx, mysqltest.NewDatabase(b), mysqlstore.Config{})
			if err != nil {
				b.Fatal(err)
			}
			defer store.Close()
			o, err := mysql.New(store, mysql.Config{})
			if err != nil {
				b.Fatal(err)
			}
			if err := o.Migrate(ctx); err != nil {
				b.Fatal(err)
			}
			data := []byte(`{"what":"something happened","n":12345}`)
			b.SetParallelism(c)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					id := uuid.New()
					msg := outbox.Message{Topic: "esflow.World", Key: []byte(id.String()), Value: data,
						Headers: []outbox.Header{{Key: "esflow-event-type", Value: []byte("Happened")}}}
					if err := o.AppendWithOutbox(ctx, []eventstore.Record{{StreamID: id, Topic: "Happened", Data: data}}, []outbox.Message{msg}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

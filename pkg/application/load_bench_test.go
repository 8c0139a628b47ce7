package application_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/esflow/esflow/internal/pgtest"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
)

// loadLine is a ~250-byte JSON event, like esbench's workload 5.
type loadLine struct {
	Seq      int    `json:"seq"`
	Account  string `json:"account"`
	Amount   int64  `json:"amount"`
	Currency string `json:"currency"`
	Memo     string `json:"memo"`
}

type loadAccount struct {
	aggregate.Root
	Lines   int   `json:"lines"`
	Balance int64 `json:"balance"`
}

func (a *loadAccount) Apply(e aggregate.Event) {
	if p, ok := e.Payload.(*loadLine); ok {
		a.Lines++
		a.Balance += p.Amount
	}
}

// BenchmarkLoad is Repository.Get of an aggregate of N events on
// PostgreSQL, without snapshots: read, decode, verify (each event's hash
// and the chain) and replay. The server's durability settings do not
// matter here (reads only).
func BenchmarkLoad(b *testing.B) {
	ctx := context.Background()
	reg := aggregate.NewRegistry()
	aggregate.Register[loadLine](reg)
	aggregate.Register[loadAccount](reg)
	app, err := application.New(ctx, application.Config{DatabaseURL: pgtest.NewDatabase(b), Registry: reg, CreateTables: true})
	if err != nil {
		b.Fatal(err)
	}
	defer app.Close()
	repo := application.NewRepository(app.Store, func() *loadAccount { return new(loadAccount) })
	memo := strings.Repeat("x", 170)
	for _, n := range []int{1, 100, 10000} {
		a := new(loadAccount)
		if err := aggregate.Create(a, &loadLine{Seq: 0, Account: "ACC-00000000", Amount: 12345, Currency: "EUR", Memo: memo}); err != nil {
			b.Fatal(err)
		}
		for i := 1; i < n; i++ {
			if err := aggregate.Trigger(a, &loadLine{Seq: i, Account: "ACC-00000000", Amount: 12345, Currency: "EUR", Memo: memo}); err != nil {
				b.Fatal(err)
			}
			if i%1000 == 0 {
				if err := repo.Save(ctx, a); err != nil {
					b.Fatal(err)
				}
			}
		}
		if err := repo.Save(ctx, a); err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				got, err := repo.Get(ctx, a.ID())
				if err != nil {
					b.Fatal(err)
				}
				if got.Lines != n {
					b.Fatalf("loaded %d lines, want %d", got.Lines, n)
				}
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

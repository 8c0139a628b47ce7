package application_test

import (
	"context"
	"testing"

	"github.com/esflow/esflow/examples/domain"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/outbox"
)

// BenchmarkSaveMemory is Application.Save of one new World (one event)
// on the in-memory backend with an outbox and no tracer installed (the
// global no-op provider): the save path without I/O, where the cost of
// the disabled tracing (a no-op span, a context lookup for the trace
// headers) would show if it had one. BENCHMARKS.md, "Tracing off".
func BenchmarkSaveMemory(b *testing.B) {
	reg := aggregate.NewRegistry()
	domain.Register(reg)
	app, err := application.New(context.Background(), application.Config{DatabaseURL: "memory:", Registry: reg, Outbox: &outbox.Builder{}})
	if err != nil {
		b.Fatal(err)
	}
	defer app.Close()
	ctx := context.Background()
	worlds := make([]*domain.World, b.N)
	for i := range worlds {
		if worlds[i], err = domain.NewWorld("gods"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := app.Save(ctx, worlds[i]); err != nil {
			b.Fatal(err)
		}
	}
}

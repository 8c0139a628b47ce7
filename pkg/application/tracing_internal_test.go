package application

import (
	"context"
	"testing"

	"github.com/esflow/esflow/examples/domain"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/outbox"
)

// BenchmarkTracingOff is what tracing adds to a save when no SDK is
// installed: the save span from the global (no-op) provider and the
// trace-context check on the save's outbox message. BENCHMARKS.md,
// "Tracing off".
func BenchmarkTracingOff(b *testing.B) {
	tr := tracerFrom(nil)
	w, err := domain.NewWorld("gods")
	if err != nil {
		b.Fatal(err)
	}
	aggs := []aggregate.Aggregate{w}
	msgs := make([]outbox.Message, 1)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		sctx, span := startSave(ctx, tr, aggs)
		outbox.SetTraceContext(sctx, msgs)
		endSave(span, nil)
	}
}

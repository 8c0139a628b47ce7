package application

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/esflow/esflow/internal/spans"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/eventstore"
)

// TracerName is the instrumentation scope of the application's spans.
const TracerName = "github.com/esflow/esflow/pkg/application"

// Span attributes of a save. With one aggregate they hold its type, id
// and version after the save; with several, the *s forms hold one entry
// per aggregate, in the order given to Save.
const (
	AttrAggregateType     = attribute.Key("esflow.aggregate.type")
	AttrAggregateID       = attribute.Key("esflow.aggregate.id")
	AttrAggregateVersion  = attribute.Key("esflow.aggregate.version")
	AttrAggregateTypes    = attribute.Key("esflow.aggregate.types")
	AttrAggregateIDs      = attribute.Key("esflow.aggregate.ids")
	AttrAggregateVersions = attribute.Key("esflow.aggregate.versions")
	AttrEventCount        = attribute.Key("esflow.event.count")
	AttrConflict          = attribute.Key("esflow.concurrency_conflict")
)

// tracerFrom returns the application's tracer from tp, or from the
// global provider when tp is nil.
func tracerFrom(tp trace.TracerProvider) trace.Tracer { return spans.Tracer(tp, TracerName) }

// startSave starts the span of a save of aggs as a child of ctx's span.
// The attributes are only computed for a span that records.
func startSave(ctx context.Context, tr trace.Tracer, aggs []aggregate.Aggregate) (context.Context, trace.Span) {
	ctx, span := tr.Start(ctx, "esflow.save") // kind internal, the default
	if !span.IsRecording() {
		return ctx, span
	}
	events := 0
	for _, a := range aggs {
		events += len(a.AggregateRoot().PendingEvents())
	}
	attrs := []attribute.KeyValue{AttrEventCount.Int(events)}
	if len(aggs) == 1 {
		root := aggs[0].AggregateRoot()
		attrs = append(attrs, AttrAggregateType.String(root.Type()), AttrAggregateID.String(root.ID().String()),
			AttrAggregateVersion.Int64(int64(root.Version())))
	} else {
		types, ids, versions := make([]string, len(aggs)), make([]string, len(aggs)), make([]int64, len(aggs))
		for i, a := range aggs {
			root := a.AggregateRoot()
			types[i], ids[i], versions[i] = root.Type(), root.ID().String(), int64(root.Version())
		}
		attrs = append(attrs, AttrAggregateTypes.StringSlice(types), AttrAggregateIDs.StringSlice(ids),
			AttrAggregateVersions.Int64Slice(versions))
	}
	span.SetAttributes(attrs...)
	return ctx, span
}

// endSave ends a save's span with err's status: an error status for any
// failure, marked as a concurrency conflict for eventstore.ErrConcurrency.
func endSave(span trace.Span, err error) {
	if errors.Is(err, eventstore.ErrConcurrency) {
		span.SetAttributes(AttrConflict.Bool(true))
	}
	spans.End(span, err)
}

package relay

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/esflow/esflow/internal/spans"
	"github.com/esflow/esflow/pkg/outbox"
)

// TracerName is the instrumentation scope of the relay's spans.
const TracerName = "github.com/esflow/esflow/pkg/relay"

// SpanPublish is the name of the span of one batch's publish.
const SpanPublish = "esflow.relay.publish"

// Attributes of the publish span besides the messaging conventions'.
const (
	AttrShard  = attribute.Key("esflow.relay.shard")
	AttrShards = attribute.Key("esflow.relay.shards")
)

func tracerFrom(tp trace.TracerProvider) trace.Tracer { return spans.Tracer(tp, TracerName) }

// startPublish starts the span of a batch's publish: a root span (a
// batch carries the events of many traces) with a link to the span each
// message's traceparent header names, once per distinct span. Links and
// attributes are only built for a span that records; a malformed header
// gives no link.
func (r *Relay) startPublish(ctx context.Context, batch []outbox.Message) (context.Context, trace.Span) {
	ctx, span := r.tracer.Start(ctx, SpanPublish, trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindProducer))
	if !span.IsRecording() {
		return ctx, span
	}
	span.SetAttributes(
		attribute.String("messaging.system", "kafka"),
		attribute.String("messaging.operation.type", "send"),
		attribute.Int("messaging.batch.message_count", len(batch)),
		AttrShard.Int(r.cfg.Shard.Index), AttrShards.Int(max(r.cfg.Shard.Count, 1)),
	)
	links := spans.NewLinker(span)
	for _, m := range batch {
		links.Link(outbox.TraceContext(m.Headers))
	}
	return ctx, span
}

package relay

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

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

func tracerFrom(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return tp.Tracer(TracerName)
}

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
	seen := map[trace.SpanID]bool{}
	for _, m := range batch {
		sc := outbox.TraceContext(m.Headers)
		if sc.IsValid() && !seen[sc.SpanID()] {
			seen[sc.SpanID()] = true
			span.AddLink(trace.Link{SpanContext: sc})
		}
	}
	return ctx, span
}

// endPublish ends a publish span with the outcome of Publish.
func endPublish(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

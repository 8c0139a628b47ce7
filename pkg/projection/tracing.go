package projection

import (
	"context"
	"strconv"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/esflow/esflow/internal/spans"
)

// TracerName is the instrumentation scope of the runner's spans.
const TracerName = "github.com/esflow/esflow/pkg/projection"

// SpanApply is the name of the span of one batch's apply.
const SpanApply = "esflow.projection.apply"

// Attributes of the apply span besides the messaging conventions'. The
// partitions are "topic/partition", in the order the batch first met
// them; the offsets lists are aligned with them (first and last offset of
// the batch in each). Applied, duplicates and gaps are set when the span
// ends: events applied, skipped as already applied, and held back.
const (
	AttrProjection  = attribute.Key("esflow.projection")
	AttrPartitions  = attribute.Key("esflow.projection.partitions")
	AttrFirstOffset = attribute.Key("esflow.projection.offsets.first")
	AttrLastOffset  = attribute.Key("esflow.projection.offsets.last")
	AttrApplied     = attribute.Key("esflow.projection.applied")
	AttrDuplicates  = attribute.Key("esflow.projection.duplicates")
	AttrGaps        = attribute.Key("esflow.projection.gaps")
)

func tracerFrom(tp trace.TracerProvider) trace.Tracer { return spans.Tracer(tp, TracerName) }

// batchStats adds up what the transactions of one batch did, for its
// span: a batch may take several (one per message after a handler
// failure).
type batchStats struct{ applied, duplicates, gaps int }

type statsKey struct{}

// addStats counts res in the batch whose context ctx is, if any.
func addStats(ctx context.Context, res applyResult) {
	if st, ok := ctx.Value(statsKey{}).(*batchStats); ok {
		st.applied += res.applied
		st.duplicates += res.duplicates
		st.gaps += len(res.gaps)
	}
}

// startApply starts the span of a batch's apply: a root span (a batch
// holds the events of many traces) linked to the span each message's
// traceparent header names, once per distinct span. Links and attributes
// are only built for a span that records; a malformed or missing header
// gives no link and is otherwise ignored.
func (r *Runner) startApply(ctx context.Context, batch []item) (context.Context, trace.Span) {
	ctx, span := r.tracer.Start(ctx, SpanApply, trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindConsumer))
	if !span.IsRecording() {
		return ctx, span
	}
	type offsets struct{ first, last int64 }
	var (
		parts []partitionKey
		offs  = map[partitionKey]*offsets{}
		links = spans.NewLinker(span)
	)
	for _, it := range batch {
		m := &it.m
		k := partitionKey{m.Topic, m.Partition}
		if o := offs[k]; o != nil {
			o.first, o.last = min(o.first, m.Offset), max(o.last, m.Offset)
		} else {
			offs[k] = &offsets{m.Offset, m.Offset}
			parts = append(parts, k)
		}
		links.Link(kafkaTraceContext(m.Headers))
	}
	names := make([]string, len(parts))
	firsts, lasts := make([]int64, len(parts)), make([]int64, len(parts))
	for i, k := range parts {
		names[i] = k.topic + "/" + strconv.Itoa(k.partition)
		firsts[i], lasts[i] = offs[k].first, offs[k].last
	}
	attrs := []attribute.KeyValue{
		attribute.String("messaging.system", "kafka"),
		attribute.String("messaging.operation.type", "process"),
		attribute.Int("messaging.batch.message_count", len(batch)),
		AttrProjection.String(r.tracking),
		AttrPartitions.StringSlice(names), AttrFirstOffset.Int64Slice(firsts), AttrLastOffset.Int64Slice(lasts),
	}
	if len(parts) == 1 {
		attrs = append(attrs, attribute.String("messaging.destination.name", parts[0].topic),
			attribute.String("messaging.destination.partition.id", strconv.Itoa(parts[0].partition)))
	}
	span.SetAttributes(attrs...)
	return context.WithValue(ctx, statsKey{}, &batchStats{}), span
}

// endApply ends an apply span with the batch's counts and outcome.
func endApply(ctx context.Context, span trace.Span, err error) {
	if st, ok := ctx.Value(statsKey{}).(*batchStats); ok {
		span.SetAttributes(AttrApplied.Int(st.applied), AttrDuplicates.Int(st.duplicates), AttrGaps.Int(st.gaps))
	}
	spans.End(span, err)
}

// kafkaTraceContext returns the span context a message's W3C trace
// context headers name (invalid when missing or malformed).
func kafkaTraceContext(headers []kafka.Header) trace.SpanContext {
	c := kafkaCarrier(headers)
	return trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), c))
}

// kafkaCarrier reads Kafka headers as a propagation.TextMapCarrier.
type kafkaCarrier []kafka.Header

func (c kafkaCarrier) Get(key string) string {
	for _, h := range c {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// Set is not used: the runner only extracts.
func (c kafkaCarrier) Set(string, string) {}

func (c kafkaCarrier) Keys() []string {
	keys := make([]string, len(c))
	for i, h := range c {
		keys[i] = h.Key
	}
	return keys
}

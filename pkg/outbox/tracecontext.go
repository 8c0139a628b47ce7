package outbox

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// The W3C Trace Context headers (https://www.w3.org/TR/trace-context/) a
// message carries when it was saved inside a traced operation. The relay
// publishes them unchanged as Kafka headers; consumers (package
// projection) link their spans to the span they name.
const (
	HeaderTraceParent = "traceparent"
	HeaderTraceState  = "tracestate"
)

// traceContext is the one propagation format of the message contract:
// W3C Trace Context, whatever propagator the process configured globally,
// so that consumers in any language know what to read.
var traceContext propagation.TraceContext

// SetTraceContext writes the trace context of ctx's span into every
// message's traceparent and tracestate headers, replacing those the
// messages had (from event metadata, see [Builder.Message]). Without a
// valid span context in ctx it changes nothing, and costs one context
// lookup: the event store calls it on every append.
func SetTraceContext(ctx context.Context, msgs []Message) {
	if len(msgs) == 0 || !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	var c headerCarrier
	traceContext.Inject(ctx, &c)
	for i := range msgs {
		m := &msgs[i]
		kept := m.Headers[:0:0]
		for _, h := range m.Headers {
			if h.Key != HeaderTraceParent && h.Key != HeaderTraceState {
				kept = append(kept, h)
			}
		}
		// The values are shared by the messages: headers are never
		// written to after they are built.
		m.Headers = append(kept, c...)
	}
}

// TraceContext returns the span context that a message's traceparent
// and tracestate headers name, marked remote. It is invalid (check
// IsValid) when the headers are missing or malformed: a bad header is
// ignored, never an error.
func TraceContext(headers []Header) trace.SpanContext {
	c := headerCarrier(headers)
	return trace.SpanContextFromContext(traceContext.Extract(context.Background(), &c))
}

// headerCarrier adapts headers to propagation.TextMapCarrier.
type headerCarrier []Header

func (c *headerCarrier) Get(key string) string {
	for _, h := range *c {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func (c *headerCarrier) Set(key, value string) {
	for i, h := range *c {
		if h.Key == key {
			(*c)[i].Value = []byte(value)
			return
		}
	}
	*c = append(*c, Header{Key: key, Value: []byte(value)})
}

func (c *headerCarrier) Keys() []string {
	keys := make([]string, len(*c))
	for i, h := range *c {
		keys[i] = h.Key
	}
	return keys
}

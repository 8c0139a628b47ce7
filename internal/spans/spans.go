// Package spans holds the few OpenTelemetry API helpers the traced
// packages (application, relay, projection, writer) share. API only: the
// SDK is the program's choice (internal/telemetry for the commands).
package spans

import (
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Tracer returns the named tracer of tp, or of the global provider
// (otel.GetTracerProvider: a no-op until a program installs an SDK, and
// the installed one afterwards) when tp is nil.
func Tracer(tp trace.TracerProvider, name string) trace.Tracer {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return tp.Tracer(name)
}

// End ends span, recording err and an error status when err is not nil.
func End(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// Linker links a span to other spans, once each: the messages of a batch
// often come from one save.
type Linker struct {
	span trace.Span
	seen map[trace.SpanID]bool
}

// NewLinker returns a linker adding links to span.
func NewLinker(span trace.Span) *Linker {
	return &Linker{span: span, seen: map[trace.SpanID]bool{}}
}

// Link adds a link to sc unless sc is invalid (a missing or malformed
// header) or already linked.
func (l *Linker) Link(sc trace.SpanContext) {
	if sc.IsValid() && !l.seen[sc.SpanID()] {
		l.seen[sc.SpanID()] = true
		l.span.AddLink(trace.Link{SpanContext: sc})
	}
}

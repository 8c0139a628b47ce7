package writer

import (
	"net/http"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/esflow/esflow/internal/spans"
)

// TracerName is the instrumentation scope of the writer's spans.
const TracerName = "github.com/esflow/esflow/pkg/writer"

// startRequest starts the server span of a request, a child of the
// caller's span when the request carries one (per the propagator), and
// returns the request with the span in its context.
func (s *Server) startRequest(r *http.Request) (*http.Request, trace.Span) {
	ctx := s.propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := s.tracer.Start(ctx, r.Method, trace.WithSpanKind(trace.SpanKindServer))
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("http.request.method", methodLabel(r.Method)),
			attribute.String("url.path", r.URL.Path),
			attribute.String("network.protocol.version", strings.TrimPrefix(r.Proto, "HTTP/")),
		)
		if id := requestID(ctx); id != "" {
			span.SetAttributes(attribute.String("esflow.request_id", id))
		}
	}
	return r.WithContext(ctx), span
}

// endRequest names the span after the route that served it ("POST
// /v1/streams/{id}/events", the label of the access log and metrics)
// and ends it; a 5xx answer is an error.
func endRequest(span trace.Span, info *reqInfo, status int) {
	if span.IsRecording() {
		span.SetName(info.route)
		span.SetAttributes(attribute.Int("http.response.status_code", status))
		if _, path, ok := strings.Cut(info.route, " "); ok {
			span.SetAttributes(attribute.String("http.route", path))
		}
		if status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(status))
		}
	}
	span.End()
}

func tracerFrom(tp trace.TracerProvider) trace.Tracer { return spans.Tracer(tp, TracerName) }

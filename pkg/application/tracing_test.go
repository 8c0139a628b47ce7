package application_test

import (
	"context"
	"errors"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/esflow/esflow/examples/domain"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/outbox"
)

func spanAttrs(sp sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range sp.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

// Save is a span with the aggregate's attributes, a child of the
// caller's; its trace context goes into the outbox headers; a stale save
// ends with an error status marked as a concurrency conflict.
func TestSaveSpans(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	app := newApp(t, "sqlite::memory:", func(c *application.Config) { c.Outbox = &outbox.Builder{}; c.TracerProvider = tp })

	// Outside any span: the save span starts a trace of its own.
	w, _ := domain.NewWorld("gods")
	if err := app.Save(context.Background(), w); err != nil {
		t.Fatal(err)
	}
	// Inside the caller's span.
	ctx, parent := tp.Tracer("test").Start(context.Background(), "caller")
	w.MakeItSo("dinosaurs")
	w.MakeItSo("trucks")
	if err := app.Save(ctx, w); err != nil {
		t.Fatal(err)
	}
	parent.End()

	ended := spans.Ended()
	if len(ended) != 3 || ended[0].Name() != "esflow.save" || ended[1].Name() != "esflow.save" {
		t.Fatalf("spans %v", ended)
	}
	first, second := ended[0], ended[1]
	if first.Parent().IsValid() || second.Parent().SpanID() != parent.SpanContext().SpanID() {
		t.Fatalf("parents: %v and %v, want none and %v", first.Parent(), second.Parent(), parent.SpanContext())
	}
	for key, want := range map[attribute.Key]attribute.Value{
		application.AttrAggregateType:    attribute.StringValue("World"),
		application.AttrAggregateID:      attribute.StringValue(w.ID().String()),
		application.AttrAggregateVersion: attribute.Int64Value(3),
		application.AttrEventCount:       attribute.IntValue(2),
	} {
		if got := spanAttrs(second)[key]; got != want {
			t.Errorf("%s = %v, want %v", key, got.String(), want.String())
		}
	}

	msgs, err := app.Outbox().Fetch(context.Background(), outbox.Shard{}, 10)
	if err != nil || len(msgs) != 3 {
		t.Fatalf("outbox: %d messages, %v", len(msgs), err)
	}
	if sc := outbox.TraceContext(msgs[0].Headers); sc.SpanID() != first.SpanContext().SpanID() {
		t.Errorf("first message names span %v, want the first save span %v", sc, first.SpanContext())
	}
	for _, m := range msgs[1:] {
		sc := outbox.TraceContext(m.Headers)
		if sc.SpanID() != second.SpanContext().SpanID() || sc.TraceID() != parent.SpanContext().TraceID() {
			t.Errorf("message %d names span %v, want the save span %v", m.ID, sc, second.SpanContext())
		}
	}

	// Two saves of one version: the stale one's span is an error.
	stale, err := worlds(app).Get(context.Background(), w.ID())
	if err != nil {
		t.Fatal(err)
	}
	w.MakeItSo("first")
	stale.MakeItSo("second")
	if err := app.Save(context.Background(), w); err != nil {
		t.Fatal(err)
	}
	spans.Reset()
	if err := app.Save(context.Background(), stale); !errors.Is(err, eventstore.ErrConcurrency) {
		t.Fatalf("stale save: %v", err)
	}
	ended = spans.Ended()
	if len(ended) != 1 {
		t.Fatalf("%d spans", len(ended))
	}
	if st := ended[0].Status(); st.Code != codes.Error {
		t.Errorf("stale save status %v", st)
	}
	if got := spanAttrs(ended[0])[application.AttrConflict]; !got.AsBool() {
		t.Error("stale save span lacks the conflict attribute")
	}
	if len(ended[0].Events()) == 0 || ended[0].Events()[0].Name != "exception" {
		t.Error("stale save span has no exception event")
	}
}

// A repository's spans go where WithTracerProvider says, and several
// aggregates saved at once are listed in the slice attributes.
func TestRepositorySaveSpan(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	app := newApp(t, "memory:")
	a, _ := domain.NewWorld("a")
	b, _ := domain.NewWorld("b")
	b.MakeItSo("x")
	if err := worlds(app, application.WithTracerProvider(tp)).Save(context.Background(), a, b); err != nil {
		t.Fatal(err)
	}
	ended := spans.Ended()
	if len(ended) != 1 || ended[0].SpanKind() != trace.SpanKindInternal {
		t.Fatalf("spans %v", ended)
	}
	at := spanAttrs(ended[0])
	if ids := at[application.AttrAggregateIDs].AsStringSlice(); len(ids) != 2 || ids[0] != a.ID().String() || ids[1] != b.ID().String() {
		t.Errorf("ids %v", ids)
	}
	if v := at[application.AttrAggregateVersions].AsInt64Slice(); len(v) != 2 || v[0] != 1 || v[1] != 2 {
		t.Errorf("versions %v", v)
	}
	if n := at[application.AttrEventCount].AsInt64(); n != 3 {
		t.Errorf("event count %d", n)
	}
}

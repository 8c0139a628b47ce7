package projection_test

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/projection"
)

// setHeader replaces or adds a header of m.
func setHeader(m *kafka.Message, key, value string) {
	for i, h := range m.Headers {
		if h.Key == key {
			m.Headers[i].Value = []byte(value)
			return
		}
	}
	m.Headers = append(m.Headers, kafka.Header{Key: key, Value: []byte(value)})
}

// A message whose traceparent is malformed is applied like any other: the
// header gives no link, and the apply neither fails nor dead-letters it.
// The well-formed one gives the apply span its link; the counts of the
// batch's spans add up to what the runner did.
func TestApplySpansIgnoreMalformedTraceparent(t *testing.T) {
	t.Parallel()
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer func() { _ = tp.Shutdown(context.Background()) }()

	b := startBroker(t)
	groups := worldEvents(t, 4, 1)
	msgs := messages(t, flatten(groups))
	good := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		SpanID:  trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8}, TraceFlags: trace.FlagsSampled,
	})
	setHeader(&msgs[0], outbox.HeaderTraceParent, "00-"+good.TraceID().String()+"-"+good.SpanID().String()+"-01")
	setHeader(&msgs[1], outbox.HeaderTraceParent, "00-not-a-trace-context")
	setHeader(&msgs[1], outbox.HeaderTraceState, "=,=,\x00")
	setHeader(&msgs[2], outbox.HeaderTraceParent, "00-00000000000000000000000000000000-0000000000000000-01")      // all-zero ids are invalid
	setHeader(&msgs[3], outbox.HeaderTraceParent, "ff-"+good.TraceID().String()+"-"+good.SpanID().String()+"-01") // version ff is forbidden
	w := newWriter(t, b.Addr())
	produce(t, w, msgs)
	produce(t, w, msgs) // and again: duplicates

	cfg := config(b)
	cfg.TracerProvider = tp
	r, err := projection.NewRunner(openSQLite(t), newCounts("traced"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, r)
	eventually(t, "all applied and the duplicates skipped", 20*time.Second, func() bool {
		st := r.Status()
		return st.Applied == 4 && st.Duplicates == 4
	})
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if st := r.Status(); st.DeadLettered != 0 || st.Gaps != 0 {
		t.Fatalf("dead-lettered %d, gaps %d", st.DeadLettered, st.Gaps)
	}

	var applied, duplicates int64
	var links []trace.SpanContext
	for _, sp := range spans.Ended() {
		if sp.Name() != projection.SpanApply {
			continue
		}
		if sp.Status().Code == codes.Error {
			t.Errorf("apply span with error status: %v", sp.Status())
		}
		for _, l := range sp.Links() {
			links = append(links, l.SpanContext)
		}
		for _, kv := range sp.Attributes() {
			switch kv.Key {
			case projection.AttrApplied:
				applied += kv.Value.AsInt64()
			case projection.AttrDuplicates:
				duplicates += kv.Value.AsInt64()
			case projection.AttrProjection:
				if kv.Value.AsString() != "traced" {
					t.Errorf("projection attribute %q", kv.Value.AsString())
				}
			}
		}
	}
	if applied != 4 || duplicates != 4 {
		t.Errorf("apply spans count %d applied and %d duplicates, want 4 and 4", applied, duplicates)
	}
	// Every copy of the good message links to its span (once per batch
	// that holds it); the malformed ones link to nothing.
	if len(links) == 0 {
		t.Fatal("no apply span links to the well-formed traceparent")
	}
	for _, l := range links {
		if l.TraceID() != good.TraceID() || l.SpanID() != good.SpanID() || !l.IsRemote() {
			t.Errorf("unexpected link %v", l)
		}
	}
}

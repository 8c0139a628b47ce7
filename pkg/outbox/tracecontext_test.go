package outbox_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/esflow/esflow/pkg/outbox"
)

func TestSetTraceContext(t *testing.T) {
	// A message whose event metadata carried a trace context of its own.
	fromMetadata := []outbox.Header{
		{Key: outbox.HeaderEventID, Value: []byte("e1")},
		{Key: outbox.HeaderTraceParent, Value: []byte("00-0102030405060708090a0b0c0d0e0f10-0102030405060708-01")},
		{Key: outbox.HeaderTraceState, Value: []byte("old=1")},
	}
	msgs := []outbox.Message{{Headers: fromMetadata}, {}}

	// No span in ctx (tracing off): nothing changes.
	outbox.SetTraceContext(context.Background(), msgs)
	if len(msgs[0].Headers) != 3 || len(msgs[1].Headers) != 0 {
		t.Fatalf("headers changed without a span: %v", msgs)
	}

	ts, err := trace.ParseTraceState("vendor=x")
	if err != nil {
		t.Fatal(err)
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{0xaa, 1}, SpanID: trace.SpanID{0xbb, 2}, TraceFlags: trace.FlagsSampled, TraceState: ts,
	})
	outbox.SetTraceContext(trace.ContextWithSpanContext(context.Background(), sc), msgs)
	for i, m := range msgs {
		got := outbox.TraceContext(m.Headers)
		if got.TraceID() != sc.TraceID() || got.SpanID() != sc.SpanID() || got.TraceState().String() != "vendor=x" || !got.IsRemote() {
			t.Errorf("message %d: trace context %v, want %v", i, got, sc)
		}
		n := 0
		for _, h := range m.Headers {
			if h.Key == outbox.HeaderTraceParent || h.Key == outbox.HeaderTraceState {
				n++
			}
		}
		if n != 2 {
			t.Errorf("message %d has %d trace headers, want 2: %v", i, n, m.Headers)
		}
	}
	if string(msgs[0].Header(outbox.HeaderEventID)) != "e1" {
		t.Error("other headers lost")
	}
	// The caller's header slice is not written to.
	if string(fromMetadata[1].Value) != "00-0102030405060708090a0b0c0d0e0f10-0102030405060708-01" {
		t.Error("SetTraceContext wrote into the original headers")
	}
}

func TestTraceContextIgnoresMalformed(t *testing.T) {
	for _, v := range []string{"", "garbage", "00-0102-03-01", "00-00000000000000000000000000000000-0102030405060708-01",
		"00-0102030405060708090a0b0c0d0e0f10-0000000000000000-01", "ff-0102030405060708090a0b0c0d0e0f10-0102030405060708-01"} {
		if sc := outbox.TraceContext([]outbox.Header{{Key: outbox.HeaderTraceParent, Value: []byte(v)}}); sc.IsValid() {
			t.Errorf("traceparent %q gave a valid span context %v", v, sc)
		}
	}
}

package telemetry_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	_ "modernc.org/sqlite"

	"github.com/esflow/esflow/examples/domainapi"
	"github.com/esflow/esflow/examples/readmodel"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/broker"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/projection"
	"github.com/esflow/esflow/pkg/relay"
	"github.com/esflow/esflow/pkg/relay/kafkapub"
	"github.com/esflow/esflow/pkg/writer"
)

// stack is the pipeline in one process, every part traced into one
// in-memory span recorder: a writer on SQLite with the example domain,
// the relay publishing its outbox to the embedded broker, and the worlds
// projection reading the topic into a SQLite read model.
type stack struct {
	spans  *tracetest.SpanRecorder
	tp     *sdktrace.TracerProvider
	app    *application.Application
	http   *httptest.Server
	broker *broker.Broker
	read   projection.DB
	runner *projection.Runner
}

// quiet drops the components' logs.
var quiet = slog.New(slog.DiscardHandler)

func startStack(t *testing.T) *stack {
	t.Helper()
	ctx := context.Background()
	s := &stack{spans: tracetest.NewSpanRecorder()}
	s.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(s.spans))
	t.Cleanup(func() { _ = s.tp.Shutdown(context.Background()) })

	dir := t.TempDir()
	var err error
	s.app, err = application.New(ctx, application.Config{
		DatabaseURL: "sqlite:///" + filepath.Join(dir, "events.db"), Registry: aggregate.NewRegistry(),
		CreateTables: true, Outbox: &outbox.Builder{}, TracerProvider: s.tp, Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.app.Close() })
	srv, err := writer.New(writer.Config{App: s.app, TracerProvider: s.tp, Propagator: propagation.TraceContext{}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	domainapi.Mount(srv)
	s.http = httptest.NewServer(srv.Handler())
	t.Cleanup(s.http.Close)

	if s.broker, err = broker.Start(ctx, broker.Config{Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.broker.Close() })
	if err := s.broker.CreateTopic(ctx, readmodel.WorldTopic, 2); err != nil {
		t.Fatal(err)
	}
	pub, err := kafkapub.New(kafkapub.Config{Brokers: []string{s.broker.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	box := s.app.Outbox()
	rl, err := relay.New(box, pub, relay.Config{Locker: box, Waker: box, PollInterval: 20 * time.Millisecond, TracerProvider: s.tp, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	goRun(t, rl.Run)
	t.Cleanup(func() { _ = pub.Close() })

	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "read.db")+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	s.read = projection.NewSQLite(db)
	s.runner, err = projection.NewRunner(s.read, readmodel.Worlds{}, projection.RunnerConfig{
		Brokers: []string{s.broker.Addr()}, IdleAfter: 300 * time.Millisecond, RetryBackoff: 5 * time.Millisecond,
		TracerProvider: s.tp, Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	goRun(t, s.runner.Run)
	return s
}

// goRun runs fn until the test ends.
func goRun(t *testing.T, fn func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}

// createWorld posts a new World inside a client span of the test's own,
// whose context travels in the request's traceparent header.
func (s *stack) createWorld(t *testing.T) (trace.SpanContext, uuid.UUID) {
	t.Helper()
	ctx, client := s.tp.Tracer("test").Start(context.Background(), "client", trace.WithSpanKind(trace.SpanKindClient))
	defer client.End()
	body, _ := json.Marshal(map[string]string{"ruler": "gods"})
	req, err := http.NewRequestWithContext(ctx, "POST", s.http.URL+"/v1/worlds", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(req.Header))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		ID uuid.UUID `json:"id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("create world: %d %v", resp.StatusCode, err)
	}
	return client.SpanContext(), out.ID
}

// waitWorld waits until the read model holds the world.
func (s *stack) waitWorld(t *testing.T, id uuid.UUID) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := s.read.InTx(context.Background(), func(tx projection.Tx) error {
			_, err := readmodel.GetWorld(context.Background(), tx, s.runner.Tables(), id)
			return err
		})
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("world %s never reached the read model: %v", id, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ended returns the ended spans named name.
func (s *stack) ended(name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, sp := range s.spans.Ended() {
		if sp.Name() == name {
			out = append(out, sp)
		}
	}
	return out
}

// linkedTo returns the first ended span named name with a link to sc.
func (s *stack) linkedTo(name string, sc trace.SpanContext) sdktrace.ReadOnlySpan {
	for _, sp := range s.ended(name) {
		for _, l := range sp.Links() {
			if l.SpanContext.TraceID() == sc.TraceID() && l.SpanContext.SpanID() == sc.SpanID() {
				return sp
			}
		}
	}
	return nil
}

func attr(sp sdktrace.ReadOnlySpan, key attribute.Key) (attribute.Value, bool) {
	for _, kv := range sp.Attributes() {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

// One request, followed through the real relay, broker and projector:
// client → writer span → save span (children, one trace); the save's
// trace context in the Kafka headers; the relay's publish span and the
// projector's apply span linked to the save span.
func TestTraceFromRequestToReadModel(t *testing.T) {
	s := startStack(t)
	client, id := s.createWorld(t)
	s.waitWorld(t, id)

	writerSpans := s.ended("POST /v1/worlds")
	if len(writerSpans) != 1 {
		t.Fatalf("%d writer spans named POST /v1/worlds", len(writerSpans))
	}
	ws := writerSpans[0]
	if ws.SpanKind() != trace.SpanKindServer || ws.Parent().SpanID() != client.SpanID() || ws.SpanContext().TraceID() != client.TraceID() {
		t.Fatalf("writer span: kind %v, parent %v, trace %v; client span %v", ws.SpanKind(), ws.Parent().SpanID(), ws.SpanContext().TraceID(), client)
	}
	if v, _ := attr(ws, "http.response.status_code"); v.AsInt64() != http.StatusCreated {
		t.Errorf("writer span status code %v", v)
	}

	var save sdktrace.ReadOnlySpan
	for _, sp := range s.ended("esflow.save") {
		if v, _ := attr(sp, application.AttrAggregateID); v.AsString() == id.String() {
			save = sp
		}
	}
	if save == nil {
		t.Fatalf("no save span for %s", id)
	}
	if save.Parent().SpanID() != ws.SpanContext().SpanID() || save.SpanContext().TraceID() != client.TraceID() {
		t.Fatalf("save span's parent %v, want the writer span %v", save.Parent().SpanID(), ws.SpanContext().SpanID())
	}
	for key, want := range map[attribute.Key]attribute.Value{
		application.AttrAggregateType:    attribute.StringValue("World"),
		application.AttrAggregateVersion: attribute.Int64Value(1),
		application.AttrEventCount:       attribute.IntValue(1),
	} {
		if got, ok := attr(save, key); !ok || got != want {
			t.Errorf("save span %s = %v, want %v", key, got.String(), want.String())
		}
	}

	// The spans that publish and apply the event end after the read
	// model shows it (the apply span ends after its commit).
	var publish, apply sdktrace.ReadOnlySpan
	deadline := time.Now().Add(5 * time.Second)
	for publish == nil || apply == nil {
		publish, apply = s.linkedTo(relay.SpanPublish, save.SpanContext()), s.linkedTo(projection.SpanApply, save.SpanContext())
		if time.Now().After(deadline) {
			t.Fatalf("publish span linked to the save: %v, apply span: %v", publish != nil, apply != nil)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if publish.SpanKind() != trace.SpanKindProducer || publish.Status().Code == codes.Error {
		t.Errorf("publish span: kind %v status %v", publish.SpanKind(), publish.Status())
	}
	if apply.SpanKind() != trace.SpanKindConsumer || apply.Status().Code == codes.Error {
		t.Errorf("apply span: kind %v status %v", apply.SpanKind(), apply.Status())
	}
	if v, _ := attr(apply, projection.AttrProjection); v.AsString() != "worlds" {
		t.Errorf("apply span projection %q", v.AsString())
	}
	if v, _ := attr(apply, projection.AttrApplied); v.AsInt64() < 1 {
		t.Errorf("apply span applied %d", v.AsInt64())
	}
	if v, _ := attr(apply, projection.AttrPartitions); !slices.ContainsFunc(v.AsStringSlice(), func(p string) bool {
		return strings.HasPrefix(p, readmodel.WorldTopic+"/")
	}) {
		t.Errorf("apply span partitions %v", v.AsStringSlice())
	}
	if _, ok := attr(apply, projection.AttrFirstOffset); !ok {
		t.Errorf("apply span has no offsets")
	}
}

// The Kafka message carries the save span's traceparent as the outbox
// row had it: the relay publishes the header unchanged.
func TestTraceparentReachesKafka(t *testing.T) {
	s := startStack(t)
	_, id := s.createWorld(t)
	s.waitWorld(t, id)
	saves := s.ended("esflow.save")
	if len(saves) != 1 {
		t.Fatalf("%d save spans", len(saves))
	}
	sc := saves[0].SpanContext()
	want := "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-01"
	for p := range 2 {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{s.broker.Addr()}, Topic: readmodel.WorldTopic, Partition: p, MaxWait: 50 * time.Millisecond})
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		m, err := r.ReadMessage(ctx)
		cancel()
		_ = r.Close()
		if err != nil {
			continue // the other partition
		}
		if string(m.Key) != id.String() {
			t.Fatalf("unexpected message %s", m.Key)
		}
		var got []string
		for _, h := range m.Headers {
			if h.Key == outbox.HeaderTraceParent {
				got = append(got, string(h.Value))
			}
		}
		if len(got) != 1 || got[0] != want {
			t.Fatalf("traceparent headers %q, want [%q]", got, want)
		}
		return
	}
	t.Fatalf("no message of %s in %s", id, readmodel.WorldTopic)
}

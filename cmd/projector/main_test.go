package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/esflow/esflow/examples/domain"
	"github.com/esflow/esflow/examples/readmodel"
	"github.com/esflow/esflow/internal/projector"
	"github.com/esflow/esflow/pkg/broker"
	"github.com/esflow/esflow/pkg/kafkaenv"
	"github.com/esflow/esflow/pkg/outbox"
)

func TestProjectorServesReadModels(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	b, err := broker.Start(ctx, broker.Config{Partitions: 8, Topics: []string{readmodel.WorldTopic, readmodel.ExampleTopic}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = b.Close() }()

	// Events of one world and one example, as the relay publishes them.
	w, err := domain.NewWorld("alice")
	must(t, err)
	must(t, w.MakeItSo("dinosaurs"))
	must(t, w.MakeItSo("comets"))
	must(t, w.SetRuler("bob"))
	x, err := domain.NewExample("bar")
	must(t, err)
	must(t, x.SetFoo("baz"))
	events := append(w.PendingEvents(), x.PendingEvents()...)
	msgs, err := (&outbox.Builder{}).Messages(events, make([][]byte, len(events)), false)
	must(t, err)

	// Every message twice: the read model must count each event once.
	var kmsgs []kafka.Message
	for range 2 {
		for _, m := range msgs {
			km := kafka.Message{Topic: m.Topic, Key: m.Key, Value: m.Value}
			for _, h := range m.Headers {
				km.Headers = append(km.Headers, kafka.Header{Key: h.Key, Value: h.Value})
			}
			kmsgs = append(kmsgs, km)
		}
	}
	writer := &kafka.Writer{
		Addr:         kafka.TCP(b.Addr()),
		Balancer:     kafka.Murmur2Balancer{},
		BatchTimeout: 5 * time.Millisecond,
		RequiredAcks: kafka.RequireAll,
	}
	must(t, writer.WriteMessages(ctx, kmsgs...))
	must(t, writer.Close())

	// The service, in process, over a SQLite file.
	addrc := make(chan net.Addr, 1)
	cfg := config{
		DatabaseURL: "sqlite://" + filepath.Join(t.TempDir(), "read.db"),
		Kafka:       kafkaenv.Config{Brokers: []string{b.Addr()}, ClientID: "projector-test"},
		GroupPrefix: "test-",
		HTTPAddr:    "127.0.0.1:0",
		Logger:      slog.New(slog.NewTextHandler(os.Stderr, nil)),
		Listening:   func(a net.Addr) { addrc <- a },
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- run(runCtx, cfg) }()
	var base string
	select {
	case a := <-addrc:
		base = "http://" + a.String()
	case err := <-done:
		t.Fatalf("run returned before listening: %v", err)
	case <-ctx.Done():
		t.Fatal("service did not start listening")
	}

	wantWorld := readmodel.World{ID: w.ID(), Ruler: "bob", History: []string{"dinosaurs", "comets"}, Version: w.Version()}
	var gotWorld readmodel.World
	poll(t, ctx, "world", func() bool {
		status := getJSON(t, base+"/worlds/"+w.ID().String(), &gotWorld)
		return status == http.StatusOK && reflect.DeepEqual(gotWorld, wantWorld)
	})

	wantCounts := []readmodel.Count{
		{AggregateType: "Example", EventType: "AttributeChanged", Count: 1},
		{AggregateType: "Example", EventType: "Created", Count: 1},
		{AggregateType: "World", EventType: "AttributeChanged", Count: 1},
		{AggregateType: "World", EventType: "Created", Count: 1},
		{AggregateType: "World", EventType: "SomethingHappened", Count: 2},
	}
	var gotCounts []readmodel.Count
	poll(t, ctx, "counts and readiness", func() bool {
		getJSON(t, base+"/counts", &gotCounts)
		var ready map[string]string
		return reflect.DeepEqual(gotCounts, wantCounts) && getJSON(t, base+"/readyz", &ready) == http.StatusOK
	})
	// Caught up: all duplicates have been seen by now, and skipped.
	getJSON(t, base+"/counts", &gotCounts)
	if !reflect.DeepEqual(gotCounts, wantCounts) {
		t.Errorf("counts after catching up = %+v, want %+v", gotCounts, wantCounts)
	}

	var gotExample readmodel.Example
	if s := getJSON(t, base+"/examples/"+x.ID().String(), &gotExample); s != http.StatusOK {
		t.Errorf("GET example: status %d", s)
	}
	if want := (readmodel.Example{ID: x.ID(), Foo: "baz", Version: x.Version()}); gotExample != want {
		t.Errorf("example = %+v, want %+v", gotExample, want)
	}
	var list []readmodel.World
	if s := getJSON(t, base+"/worlds", &list); s != http.StatusOK || len(list) != 1 || !reflect.DeepEqual(list[0], wantWorld) {
		t.Errorf("GET /worlds: status %d, %+v", s, list)
	}

	for _, c := range []struct {
		path   string
		status int
	}{
		{"/worlds/" + uuid.NewString(), http.StatusNotFound},
		{"/examples/" + uuid.NewString(), http.StatusNotFound},
		{"/examples/" + w.ID().String(), http.StatusNotFound}, // a world is no example
		{"/worlds/not-a-uuid", http.StatusBadRequest},
		{"/examples/42", http.StatusBadRequest},
		{"/healthz", http.StatusOK},
	} {
		var body map[string]string
		if s := getJSON(t, base+c.path, &body); s != c.status {
			t.Errorf("GET %s: status %d, want %d", c.path, s, c.status)
		} else if c.status != http.StatusOK && body["error"] == "" {
			t.Errorf("GET %s: no JSON error in %v", c.path, body)
		}
	}
	resp, err := http.Get(base + "/metrics")
	must(t, err)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /metrics: status %d", resp.StatusCode)
	}

	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run after shutdown: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Error("run did not return after cancellation")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func poll(t *testing.T, ctx context.Context, what string, ok func() bool) {
	t.Helper()
	for !ok() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// getJSON decodes the response body into v (when it is JSON) and returns
// the status code.
func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Logf("GET %s: %s", url, fmt.Sprint(err))
	}
	return resp.StatusCode
}

func TestOpenDBRejectsBadURLs(t *testing.T) {
	for _, url := range []string{"", "mysql://x/y", "sqlite://:memory:", "sqlite://a.db?mode=ro"} {
		if _, _, closeFn, err := projector.OpenDB(context.Background(), url); err == nil {
			closeFn()
			t.Errorf("projector.OpenDB(%q) succeeded, want an error", url)
		}
	}
	write, read, closeFn, err := projector.OpenDB(context.Background(), "sqlite://"+filepath.Join(t.TempDir(), "ok.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	if write == nil || read == nil {
		t.Fatal("openDB returned a nil handle")
	}
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/esflow/esflow/examples/domain"
	"github.com/esflow/esflow/examples/readmodel"
	"github.com/esflow/esflow/internal/pgtest"
	"github.com/esflow/esflow/internal/projector"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/broker"
	"github.com/esflow/esflow/pkg/kafkaenv"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/projection"
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
	// Metrics: each event applied once, each duplicate counted, caught up.
	metrics := scrape(t, base+"/metrics")
	for series, want := range map[string]float64{
		`esflow_projection_applied_total{projection="worlds"}`:          4,
		`esflow_projection_duplicates_total{projection="worlds"}`:       4,
		`esflow_projection_applied_total{projection="examples"}`:        2,
		`esflow_projection_applied_total{projection="event_counts"}`:    6,
		`esflow_projection_duplicates_total{projection="event_counts"}`: 6,
		`esflow_projection_gaps_total{projection="worlds"}`:             0,
		`esflow_projection_dead_lettered_total{projection="worlds"}`:    0,
		`esflow_projection_ready{projection="worlds"}`:                  1,
		`esflow_projection_ready{projection="event_counts"}`:            1,
		`esflow_projection_open_gaps{projection="worlds"}`:              0,
		`esflow_projection_batch_events_sum{projection="worlds"}`:       4,
	} {
		if got, ok := metrics[series]; !ok || got != want {
			t.Errorf("metric %s = %v (present %v), want %v", series, got, ok, want)
		}
	}
	var lagSeries int
	for series, v := range metrics {
		if strings.HasPrefix(series, "esflow_projection_partition_lag_messages{") {
			lagSeries++
			if v != 0 {
				t.Errorf("%s = %v after catching up, want 0", series, v)
			}
		}
	}
	if lagSeries == 0 {
		t.Error("no esflow_projection_partition_lag_messages series")
	}
	if age := metrics[`esflow_projection_last_event_age_seconds{projection="worlds"}`]; age <= 0 || age > 600 {
		t.Errorf("last event age of worlds = %vs, want a small positive age", age)
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

// scrape reads a Prometheus text exposition into series -> value.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d", url, resp.StatusCode)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
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

// TestRedriveAndRebuildJobs runs -redrive and -rebuild through run on
// PostgreSQL: a world whose creation the read model refused (a
// constraint standing in for a broken handler) is dead-lettered, applied
// by -redrive once the constraint is gone, and the rebuilt read models
// (from the event store and from Kafka) equal the event store's truth.
func TestRedriveAndRebuildJobs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	b, err := broker.Start(ctx, broker.Config{Partitions: 4, Topics: []string{readmodel.WorldTopic, readmodel.ExampleTopic}})
	must(t, err)
	defer func() { _ = b.Close() }()
	esURL, rmURL := pgtest.NewDatabase(t), pgtest.NewDatabase(t)
	reg := aggregate.NewRegistry()
	domain.Register(reg)
	app, err := application.New(ctx, application.Config{DatabaseURL: esURL, Registry: reg, CreateTables: true, Outbox: &outbox.Builder{}})
	must(t, err)
	defer func() { _ = app.Close() }()

	var worlds []*domain.World
	for i, ruler := range []string{"a", "b", "poison", "c", "d", "e"} {
		w, err := domain.NewWorld(ruler)
		must(t, err)
		must(t, w.MakeItSo(fmt.Sprintf("thing %d", i)))
		must(t, app.Save(ctx, w))
		worlds = append(worlds, w)
	}
	for _, foo := range []string{"x", "y"} {
		x, err := domain.NewExample(foo)
		must(t, err)
		must(t, x.SetFoo(foo+foo))
		must(t, app.Save(ctx, x))
	}
	publishOutbox(t, ctx, app, b.Addr())

	// The worlds table refuses the poison world until the constraint goes.
	write, _, closeDB, err := projector.OpenDB(ctx, rmURL)
	must(t, err)
	defer closeDB()
	live, err := projection.NewRunner(write, readmodel.Worlds{}, projection.RunnerConfig{Brokers: []string{b.Addr()}})
	must(t, err)
	must(t, live.Setup(ctx))
	exec(t, write, `ALTER TABLE worlds ADD CONSTRAINT no_poison CHECK (ruler <> 'poison')`)

	addrc := make(chan net.Addr, 1)
	cfg := config{
		DatabaseURL: rmURL,
		Kafka:       kafkaenv.Config{Brokers: []string{b.Addr()}, ClientID: "projector-jobs-test"},
		GroupPrefix: "jobs-",
		HTTPAddr:    "127.0.0.1:0",
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		Listening:   func(a net.Addr) { addrc <- a },
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(runCtx, cfg) }()
	base := "http://" + (<-addrc).String()
	poll(t, ctx, "the poison world dead-lettered and the rest applied", func() bool {
		m := scrape(t, base+"/metrics")
		return m[`esflow_projection_dead_lettered_total{projection="worlds"}`] == 1 &&
			m[`esflow_projection_applied_total{projection="worlds"}`] == 11 && m[`esflow_projection_ready{projection="worlds"}`] == 1
	})
	stop()
	must(t, <-done)

	exec(t, write, `ALTER TABLE worlds DROP CONSTRAINT no_poison`)
	var out strings.Builder
	job := cfg
	job.Out, job.Redrive = &out, "worlds"
	must(t, run(ctx, job))
	if !strings.Contains(out.String(), "redrive worlds: applied 1, skipped 0, still failing 0") {
		t.Fatalf("-redrive printed %q", out.String())
	}
	wantWorlds := make([]readmodel.World, len(worlds))
	for i, w := range worlds {
		wantWorlds[i] = readmodel.World{ID: w.ID(), Ruler: w.Ruler, History: w.History, Version: w.Version()}
	}
	sort.Slice(wantWorlds, func(i, j int) bool { return wantWorlds[i].ID.String() < wantWorlds[j].ID.String() })
	wantCounts := []readmodel.Count{
		{AggregateType: "Example", EventType: "AttributeChanged", Count: 2},
		{AggregateType: "Example", EventType: "Created", Count: 2},
		{AggregateType: "World", EventType: "Created", Count: 6},
		{AggregateType: "World", EventType: "SomethingHappened", Count: 6},
	}
	checkReadModels(t, write, wantWorlds, wantCounts, "after -redrive")

	for _, c := range []struct{ name, from string }{{"worlds", "store"}, {"event_counts", "kafka"}, {"examples", "kafka"}} {
		out.Reset()
		job := cfg
		job.Out, job.Rebuild, job.RebuildFrom, job.EventStoreURL = &out, c.name, c.from, esURL
		if err := run(ctx, job); err != nil {
			t.Fatalf("-rebuild %s -rebuild-from %s: %v", c.name, c.from, err)
		}
		if !strings.Contains(out.String(), "rebuild "+c.name+": swapped in") || !strings.Contains(out.String(), "events/s") {
			t.Fatalf("-rebuild %s printed %q", c.name, out.String())
		}
		checkReadModels(t, write, wantWorlds, wantCounts, "after -rebuild "+c.name+" -rebuild-from "+c.from)
	}

	job = cfg
	job.Rebuild = "nonesuch"
	if err := run(ctx, job); !errors.Is(err, projector.ErrUnknownProjection) {
		t.Errorf("-rebuild nonesuch: %v, want ErrUnknownProjection", err)
	}
	job.RebuildFrom, job.Rebuild = "store", "worlds"
	if err := run(ctx, job); err == nil || !strings.Contains(err.Error(), "EVENTSTORE_URL") {
		t.Errorf("-rebuild-from store without a store URL: %v", err)
	}
}

// publishOutbox copies the application's outbox to the broker, as the
// relay would.
func publishOutbox(t *testing.T, ctx context.Context, app *application.Application, addr string) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(addr), Balancer: kafka.Murmur2Balancer{}, BatchTimeout: 5 * time.Millisecond,
		RequiredAcks: kafka.RequireAll, Transport: &kafka.Transport{}}
	defer func() { _ = w.Close() }()
	box := app.Outbox()
	for {
		msgs, err := box.Fetch(ctx, outbox.Shard{}, 1000)
		must(t, err)
		if len(msgs) == 0 {
			return
		}
		ids := make([]int64, len(msgs))
		kmsgs := make([]kafka.Message, len(msgs))
		for i, m := range msgs {
			kmsgs[i], ids[i] = kafka.Message{Topic: m.Topic, Key: m.Key, Value: m.Value}, m.ID
			for _, h := range m.Headers {
				kmsgs[i].Headers = append(kmsgs[i].Headers, kafka.Header{Key: h.Key, Value: h.Value})
			}
		}
		must(t, w.WriteMessages(ctx, kmsgs...))
		must(t, box.Delete(ctx, ids))
	}
}

func exec(t *testing.T, db projection.DB, sql string) {
	t.Helper()
	must(t, db.InTx(context.Background(), func(tx projection.Tx) error {
		_, err := tx.Exec(context.Background(), sql)
		return err
	}))
}

func checkReadModels(t *testing.T, db projection.DB, wantWorlds []readmodel.World, wantCounts []readmodel.Count, when string) {
	t.Helper()
	ctx := context.Background()
	wt, err := projection.NewTables(readmodel.Worlds{}.Tables(), "")
	must(t, err)
	ct, err := projection.NewTables(readmodel.EventCounts{}.Tables(), "")
	must(t, err)
	var gotWorlds []readmodel.World
	var gotCounts []readmodel.Count
	must(t, db.InTx(ctx, func(tx projection.Tx) (err error) {
		if gotWorlds, err = readmodel.ListWorlds(ctx, tx, wt, 100); err != nil {
			return err
		}
		gotCounts, err = readmodel.ListCounts(ctx, tx, ct)
		return err
	}))
	if !reflect.DeepEqual(gotWorlds, wantWorlds) {
		t.Errorf("worlds %s:\n%+v\nwant\n%+v", when, gotWorlds, wantWorlds)
	}
	if !reflect.DeepEqual(gotCounts, wantCounts) {
		t.Errorf("counts %s:\n%+v\nwant\n%+v", when, gotCounts, wantCounts)
	}
}

package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/esflow/esflow/internal/proctest"
	"github.com/esflow/esflow/pkg/broker"
	"github.com/esflow/esflow/pkg/outbox"
)

// start runs the service in-process and returns its base URL and a stop
// function that returns run's result.
func start(t *testing.T, args ...string) (string, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	done := make(chan error, 1)
	logs := &proctest.SyncBuffer{}
	go func() {
		done <- run(ctx, append([]string{"-http-addr", "127.0.0.1:0"}, args...), logs, func(a net.Addr) { addrc <- a })
	}()
	select {
	case a := <-addrc:
		var once sync.Once
		var err error
		stop := func() error {
			once.Do(func() { cancel(); err = <-done })
			return err
		}
		t.Cleanup(func() { stop() })
		return "http://" + a.String(), stop
	case err := <-done:
		cancel()
		t.Fatalf("writer did not start: %v\n%s", err, logs.String())
	}
	return "", nil
}

// TestWorldReachesKafka runs the writer with its in-process relay on a
// SQLite file and the embedded broker: a World created over HTTP arrives
// on esflow.World, keyed by its id.
func TestWorldReachesKafka(t *testing.T) {
	ctx := context.Background()
	b, err := broker.Start(ctx, broker.Config{Topics: []string{"esflow.World"}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	t.Setenv("DATABASE_URL", "sqlite://"+filepath.Join(t.TempDir(), "writer.db"))
	t.Setenv("KAFKA_BROKERS", b.Addr())
	t.Setenv("WRITER_TOKEN", "s3cret")
	url, stop := start(t, "-log-format", "text")

	post := func(token string) *http.Response {
		req, _ := http.NewRequest("POST", url+"/v1/worlds", strings.NewReader(`{"ruler":"gods"}`))
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if res := post("wrong"); res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong token: %s", res.Status)
	}
	res := post("s3cret")
	var created struct{ ID string }
	if err := json.NewDecoder(res.Body).Decode(&created); err != nil || res.StatusCode != http.StatusCreated {
		t.Fatalf("create: %s %v", res.Status, err)
	}
	res.Body.Close()

	// Read the partition the key hashes to, from the start.
	parts := make([]int, b.Partitions())
	for i := range parts {
		parts[i] = i
	}
	p := kafka.Murmur2Balancer{}.Balance(kafka.Message{Key: []byte(created.ID)}, parts...)
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{b.Addr()}, Topic: "esflow.World", Partition: p, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	rctx, cancel := context.WithTimeout(ctx, time.Minute) // a bound, not an assertion
	defer cancel()
	m, err := r.ReadMessage(rctx)
	if err != nil {
		t.Fatalf("no message on esflow.World partition %d: %v", p, err)
	}
	env, err := outbox.DecodeEnvelope(m.Value)
	if err != nil || string(m.Key) != created.ID || env.AggregateID.String() != created.ID || env.EventType != "Created" ||
		!strings.Contains(string(env.Payload), `"ruler":"gods"`) {
		t.Fatalf("message key %s envelope %+v %v", m.Key, env, err)
	}

	// Ready (database and relay), and the relay's metrics are served too.
	for _, path := range []string{"/readyz", "/metrics"} {
		res, err := http.Get(url + path)
		if err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("%s: %v %v", path, res, err)
		}
		res.Body.Close()
	}
	if err := stop(); err != nil {
		t.Fatalf("run after shutdown: %v", err)
	}
}

// TestConfigErrors checks what run refuses before starting.
func TestConfigErrors(t *testing.T) {
	db := "sqlite://" + filepath.Join(t.TempDir(), "w.db")
	for _, c := range []struct {
		name, dbURL, brokers string
		args                 []string
		says                 string
	}{
		{"no database", "", "", []string{"-relay=false"}, "DATABASE_URL is required"},
		{"no brokers", db, "", nil, "KAFKA_BROKERS"},
		{"bad flag", db, "", []string{"-nope"}, "flag provided but not defined"},
		{"bad log format", db, "", []string{"-relay=false", "-log-format", "xml"}, "log-format"},
		{"bad body limit", db, "", []string{"-relay=false", "-max-body-bytes", "0"}, "max-body-bytes"},
		{"bad database url", "ftp://x", "", []string{"-relay=false"}, "ftp"},
		{"stray argument", db, "", []string{"-relay=false", "extra"}, "unexpected argument"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("DATABASE_URL", c.dbURL)
			t.Setenv("DB_URI", "")
			t.Setenv("KAFKA_BROKERS", c.brokers)
			var logs proctest.SyncBuffer
			err := run(context.Background(), append([]string{"-http-addr", "127.0.0.1:0"}, c.args...), &logs, nil)
			if err == nil || !strings.Contains(err.Error()+logs.String(), c.says) {
				t.Fatalf("run: %v, want an error about %q", err, c.says)
			}
		})
	}
}

// TestWithoutRelay serves the API with the relay turned off: events wait
// in the outbox for a separately deployed cmd/relay.
func TestWithoutRelay(t *testing.T) {
	t.Setenv("DATABASE_URL", "sqlite://"+filepath.Join(t.TempDir(), "w.db"))
	t.Setenv("KAFKA_BROKERS", "")
	t.Setenv("WRITER_TOKEN", "")
	url, stop := start(t, "-relay=false")
	res, err := http.Post(url+"/v1/worlds", "application/json", strings.NewReader(`{"ruler":"gods"}`))
	if err != nil || res.StatusCode != http.StatusCreated {
		t.Fatalf("create: %v %v", res, err)
	}
	res.Body.Close()
	res, err = http.Get(url + "/v1/activity")
	if err != nil {
		t.Fatal(err)
	}
	var a struct {
		Backlog struct{ Messages int } `json:"backlog"`
	}
	if err := json.NewDecoder(res.Body).Decode(&a); err != nil || a.Backlog.Messages != 1 {
		t.Fatalf("backlog %+v %v", a, err)
	}
	res.Body.Close()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestShutdownDrains starts shutting down while a request is in flight
// (its body half sent): the request still completes, then run returns.
func TestShutdownDrains(t *testing.T) {
	t.Setenv("DATABASE_URL", "sqlite://"+filepath.Join(t.TempDir(), "w.db"))
	t.Setenv("KAFKA_BROKERS", "")
	t.Setenv("WRITER_TOKEN", "")
	url, stop := start(t, "-relay=false")

	pr, pw := io.Pipe()
	type result struct {
		status int
		err    error
	}
	done := make(chan result, 1)
	go func() {
		res, err := http.Post(url+"/v1/worlds", "application/json", pr)
		if err != nil {
			done <- result{err: err}
			return
		}
		res.Body.Close()
		done <- result{status: res.StatusCode}
	}()
	if _, err := pw.Write([]byte(`{"ruler":`)); err != nil {
		t.Fatal(err)
	}
	// Wait until the server is inside that request: two requests in
	// flight, it and the /metrics request asking.
	for inFlight(t, url) < 2 {
		time.Sleep(10 * time.Millisecond)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	// The listener closes; the in-flight request is still being served.
	for {
		if _, err := http.Get(url + "/healthz"); err != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := pw.Write([]byte(`"gods"}`)); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if r := <-done; r.err != nil || r.status != http.StatusCreated {
		t.Fatalf("in-flight request: %+v", r)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
}

func inFlight(t *testing.T, url string) float64 {
	t.Helper()
	res, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "esflow_writer_http_requests_in_flight "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	t.Fatal("no in-flight gauge")
	return 0
}

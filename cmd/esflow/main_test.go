package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/esflow/esflow/examples/readmodel"
)

// TestEmbeddedPipeline drives the whole stack through HTTP: a World
// created on the writer shows up on its Kafka topic (read with a
// separate client) and in the read model; a restart keeps the data.
func TestEmbeddedPipeline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dir := t.TempDir()
	env := func(string) string { return "" }
	args := []string{"-data", dir, "-http-addr", "127.0.0.1:0", "-broker-addr", "127.0.0.1:0"}

	ep, banner, stop := start(t, ctx, args, env)
	for _, want := range []string{"curl -s -X POST " + ep.HTTP + "/v1/worlds", "kcat -b " + ep.Broker, ep.HTTP + "/read/worlds"} {
		if !strings.Contains(banner(), want) {
			t.Errorf("banner lacks %q:\n%s", want, banner())
		}
	}

	var created struct {
		ID      string `json:"id"`
		Version uint64 `json:"version"`
	}
	if s := do(t, http.MethodPost, ep.HTTP+"/v1/worlds", `{"ruler":"gaia"}`, &created); s != http.StatusCreated {
		t.Fatalf("POST /v1/worlds: status %d", s)
	}
	if s := do(t, http.MethodPost, ep.HTTP+"/v1/worlds/"+created.ID+"/make-it-so", `{"what":"oceans"}`, nil); s/100 != 2 {
		t.Fatalf("make-it-so: status %d", s)
	}

	// The topic, through a client of its own.
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: []string{ep.Broker}, Topic: readmodel.WorldTopic, GroupID: "esflow-test-watch",
		StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond,
	})
	defer func() { _ = r.Close() }()
	for seen := 0; seen < 2; {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("reading %s: %v", readmodel.WorldTopic, err)
		}
		if string(m.Key) == created.ID {
			seen++
		}
	}

	// The read model.
	var w readmodel.World
	poll(t, ctx, "the world in the read model", func() bool {
		return do(t, http.MethodGet, ep.HTTP+"/read/worlds/"+created.ID, "", &w) == http.StatusOK && w.Version == 2
	})
	if w.Ruler != "gaia" || len(w.History) != 1 || w.History[0] != "oceans" {
		t.Errorf("read model world = %+v", w)
	}
	stop()

	// Again: the data is still there.
	ep, _, stop = start(t, ctx, args, env)
	defer stop()
	var got struct {
		Ruler   string   `json:"ruler"`
		History []string `json:"history"`
		Version uint64   `json:"version"`
	}
	if s := do(t, http.MethodGet, ep.HTTP+"/v1/worlds/"+created.ID, "", &got); s != http.StatusOK || got.Ruler != "gaia" || got.Version != 2 {
		t.Errorf("after restart: GET world: status %d, %+v", s, got)
	}
	if s := do(t, http.MethodGet, ep.HTTP+"/read/worlds/"+created.ID, "", &w); s != http.StatusOK || w.Version != 2 {
		t.Errorf("after restart: read model: status %d, %+v", s, w)
	}
	// New events still flow after the restart.
	if s := do(t, http.MethodPut, ep.HTTP+"/v1/worlds/"+created.ID+"/ruler", `{"ruler":"zeus"}`, nil); s/100 != 2 {
		t.Fatalf("PUT ruler after restart: status %d", s)
	}
	poll(t, ctx, "the new ruler in the read model", func() bool {
		return do(t, http.MethodGet, ep.HTTP+"/read/worlds/"+created.ID, "", &w) == http.StatusOK && w.Ruler == "zeus" && w.Version == 3
	})
}

// start runs the stack until the returned stop is called (which waits
// for a clean exit).
func start(t *testing.T, ctx context.Context, args []string, env func(string) string) (Endpoints, func() string, func()) {
	t.Helper()
	runCtx, cancel := context.WithCancel(ctx)
	var mu sync.Mutex
	var out bytes.Buffer
	epc := make(chan Endpoints, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(runCtx, args, env, lockedWriter{&mu, &out}, os.Stderr, func(ep Endpoints) { epc <- ep })
	}()
	var ep Endpoints
	select {
	case ep = <-epc:
	case err := <-done:
		cancel()
		t.Fatalf("run returned before listening: %v", err)
	case <-ctx.Done():
		cancel()
		t.Fatal("the stack did not start")
	}
	banner := func() string { mu.Lock(); defer mu.Unlock(); return out.String() }
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("run after Ctrl-C: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Error("run did not return after cancellation")
			}
		})
	}
	return ep, banner, stop
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// do sends a request and decodes a JSON answer into v (when not nil).
func do(t *testing.T, method, url, body string, v any) int {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if v != nil && resp.StatusCode/100 == 2 {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("%s %s: decoding: %v", method, url, err)
		}
	}
	return resp.StatusCode
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

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://u:secret@h:5432/db": "postgres://u:***@h:5432/db",
		"postgres://u@h/db":             "postgres://u@h/db",
		"sqlite://esflow-data/x.db":     "sqlite://esflow-data/x.db",
	} {
		if got := redact(in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}
}

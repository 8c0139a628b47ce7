package writer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/esflow/esflow/examples/domainapi"
	"github.com/esflow/esflow/internal/pgtest"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/writer"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// env is a writer on a real database, served over real HTTP.
type env struct {
	t     testing.TB
	app   *application.Application
	srv   *writer.Server
	http  *httptest.Server
	token string
}

func newApp(t testing.TB, url string) *application.Application {
	t.Helper()
	reg := aggregate.NewRegistry()
	app, err := application.New(context.Background(), application.Config{
		DatabaseURL: url, Registry: reg, CreateTables: true, Outbox: &outbox.Builder{},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	return app
}

// newEnv starts a writer on SQLite in memory (or url), configured by mutate.
func newEnv(t testing.TB, url string, mutate ...func(*writer.Config)) *env {
	t.Helper()
	if url == "" {
		url = "sqlite::memory:"
	}
	app := newApp(t, url)
	logOut := io.Discard
	if os.Getenv("WRITER_TEST_LOG") != "" { // to see the access log and error details
		logOut = os.Stderr
	}
	cfg := writer.Config{App: app, Logger: slog.New(slog.NewTextHandler(logOut, nil))}
	for _, m := range mutate {
		m(&cfg)
	}
	srv, err := writer.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The example domain, mounted through the public API as cmd/writer does.
	domainapi.Mount(srv)
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return &env{t: t, app: app, srv: srv, http: hs, token: cfg.Token}
}

// resp is an answer, with its JSON body decoded.
type resp struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

func (r resp) str(key string) string {
	s, _ := r.body[key].(string)
	return s
}

func (r resp) num(key string) uint64 {
	f, _ := r.body[key].(float64)
	return uint64(f)
}

// do sends a request; body is sent as it is (a string) or JSON-encoded.
// headers are name, value pairs.
func (e *env) do(method, path string, body any, headers ...string) resp {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.http.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if e.token != "" {
		req.Header.Set("Authorization", "Bearer "+e.token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
		} else {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	res, err := e.http.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	out := resp{status: res.StatusCode, header: res.Header, raw: raw}
	if strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &out.body); err != nil {
			e.t.Fatalf("%s %s: body %q is not a JSON object: %v", method, path, raw, err)
		}
	}
	return out
}

// must sends a request and fails unless the status is want.
func (e *env) must(want int, method, path string, body any, headers ...string) resp {
	e.t.Helper()
	r := e.do(method, path, body, headers...)
	if r.status != want {
		e.t.Fatalf("%s %s: status %d, want %d; body %s", method, path, r.status, want, r.raw)
	}
	return r
}

// state is what the store holds: notification count and outbox backlog.
type state struct{ notifications, backlog int64 }

func (e *env) state() state {
	e.t.Helper()
	ctx := context.Background()
	n, err := e.app.Recorder().MaxNotificationID(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	b, err := e.app.Outbox().Backlog(ctx, outbox.Shard{})
	if err != nil {
		e.t.Fatal(err)
	}
	return state{notifications: int64(n), backlog: b.Messages}
}

// messages returns the outbox's unpublished messages.
func (e *env) messages() []outbox.Message {
	e.t.Helper()
	msgs, err := e.app.Outbox().Fetch(context.Background(), outbox.Shard{}, 1000)
	if err != nil {
		e.t.Fatal(err)
	}
	return msgs
}

func (e *env) createWorld(ruler string) string {
	e.t.Helper()
	r := e.must(http.StatusCreated, "POST", "/v1/worlds", map[string]any{"ruler": ruler})
	return r.str("id")
}

package writer_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/ops"
	"github.com/esflow/esflow/pkg/writer"
)

func TestNewValidates(t *testing.T) {
	if _, err := writer.New(writer.Config{}); err == nil {
		t.Fatal("New without an application")
	}
	plain, err := application.New(context.Background(), application.Config{DatabaseURL: "sqlite::memory:", CreateTables: true})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := writer.New(writer.Config{App: plain}); err == nil || !strings.Contains(err.Error(), "outbox") {
		t.Fatalf("New with an application without outbox: %v", err)
	}
	reg := prometheus.NewRegistry()
	app := newApp(t, "sqlite::memory:")
	if _, err := writer.New(writer.Config{App: app, Registry: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := writer.New(writer.Config{App: app, Registry: reg}); err == nil {
		t.Fatal("registering the metrics twice in one registry should fail")
	}
}

func TestAuth(t *testing.T) {
	e := newEnv(t, "", func(c *writer.Config) { c.Token = "s3cret" })
	id := e.createWorld("gods") // e.do sends the right token
	before := e.state()
	for _, auth := range []string{"", "Bearer wrong", "Basic czNjcmV0", "Bearer", "bearer s3cret2"} {
		for _, c := range [][3]string{
			{"POST", "/v1/worlds", `{"ruler":"x"}`},
			{"POST", "/v1/worlds/" + id + "/make-it-so", `{"what":"x"}`},
			{"PUT", "/v1/worlds/" + id + "/ruler", `{"ruler":"x"}`},
			{"DELETE", "/v1/worlds/" + id, ``},
			{"POST", "/v1/examples", `{"foo":"x"}`},
			{"POST", "/v1/streams/" + uuid.NewString() + "/events", `{"expected_version":0,"events":[{"type":"A","data":{}}]}`},
		} {
			var body any
			if c[2] != "" {
				body = c[2]
			}
			r := e.do(c[0], c[1], body, "Authorization", auth)
			if r.status != http.StatusUnauthorized || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") || r.str("error") == "" {
				t.Fatalf("%s %s with %q: %d %v %s", c[0], c[1], auth, r.status, r.header, r.raw)
			}
		}
	}
	if after := e.state(); after != before {
		t.Fatalf("unauthorized requests wrote: %+v -> %+v", before, after)
	}
	// Reads need no token; the scheme is case-insensitive.
	e.must(http.StatusOK, "GET", "/v1/worlds/"+id, nil, "Authorization", "")
	e.must(http.StatusOK, "POST", "/v1/worlds/"+id+"/make-it-so", map[string]any{"what": "x"}, "Authorization", "bearer s3cret")
}

func TestRequestIDAndAccessLog(t *testing.T) {
	var logs bytes.Buffer
	e := newEnv(t, "", func(c *writer.Config) { c.Logger = slog.New(slog.NewJSONHandler(&logs, nil)) })
	r := e.must(http.StatusCreated, "POST", "/v1/worlds", map[string]any{"ruler": "gods"}, "X-Request-ID", "req-42")
	if r.header.Get("X-Request-ID") != "req-42" {
		t.Fatalf("request id not echoed: %v", r.header)
	}
	gen := e.must(http.StatusOK, "GET", "/healthz", nil)
	if _, err := uuid.Parse(gen.header.Get("X-Request-ID")); err != nil {
		t.Fatalf("generated request id %q", gen.header.Get("X-Request-ID"))
	}
	// An id with control characters or of absurd length is replaced.
	bad := e.must(http.StatusOK, "GET", "/healthz", nil, "X-Request-ID", strings.Repeat("a", 300))
	if len(bad.header.Get("X-Request-ID")) != 36 {
		t.Fatalf("overlong request id kept: %q", bad.header.Get("X-Request-ID"))
	}
	line := ""
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, `"req-42"`) {
			line = l
		}
	}
	for _, want := range []string{`"msg":"http request"`, `"method":"POST"`, `"route":"POST /v1/worlds"`, `"status":201`, `"duration"`} {
		if !strings.Contains(line, want) {
			t.Fatalf("access log line %q lacks %s", line, want)
		}
	}
}

func TestOpsEndpoints(t *testing.T) {
	relayDown := errors.New("relay loop stopped")
	var relayErr error
	e := newEnv(t, "", func(c *writer.Config) {
		c.Ready = map[string]ops.Check{"relay": func(context.Context) error { return relayErr }}
	})
	e.createWorld("gods")
	e.do("GET", "/v1/worlds/nope", nil)
	e.must(http.StatusOK, "GET", "/healthz", nil)
	e.must(http.StatusOK, "GET", "/readyz", nil)
	relayErr = relayDown
	if r := e.must(http.StatusServiceUnavailable, "GET", "/readyz", nil); !strings.Contains(string(r.raw), "relay") {
		t.Fatalf("readyz: %s", r.raw)
	}
	m := string(e.must(http.StatusOK, "GET", "/metrics", nil).raw)
	for _, want := range []string{
		`esflow_writer_http_requests_total{code="201",method="POST",route="POST /v1/worlds"} 1`,
		`esflow_writer_http_requests_total{code="400",method="GET",route="GET /v1/worlds/{id}"} 1`,
		`esflow_writer_http_request_duration_seconds_bucket{route="POST /v1/worlds",le=`,
		`go_goroutines`,
	} {
		if !strings.Contains(m, want) {
			t.Fatalf("metrics lack %s:\n%s", want, m)
		}
	}
	spec := e.must(http.StatusOK, "GET", "/openapi.yaml", nil)
	if !strings.HasPrefix(string(spec.raw), "openapi: 3") || spec.header.Get("Content-Type") != "application/yaml" {
		t.Fatalf("openapi: %v", spec.header)
	}
}

func TestNotifications(t *testing.T) {
	e := newEnv(t, "")
	e.createWorld("a")
	id := e.createWorld("b")
	e.must(http.StatusOK, "POST", "/v1/worlds/"+id+"/make-it-so", map[string]any{"what": "x"})

	for _, path := range []string{"/v1/notifications?section=1,10", "/v1/notifications/1,10", "/v1/notifications", "/v1/notifications/current"} {
		r := e.must(http.StatusOK, "GET", path, nil)
		items, _ := r.body["items"].([]any)
		if r.str("id") != "1,10" || len(items) != 3 || r.str("next_id") != "" {
			t.Fatalf("%s: %s", path, r.raw)
		}
	}
	if r := e.must(http.StatusOK, "GET", "/v1/notifications/11,20", nil); len(r.body["items"].([]any)) != 0 {
		t.Fatalf("empty section: %s", r.raw)
	}
	// application.RemoteLog follows the writer's log.
	rl := &application.RemoteLog{BaseURL: e.http.URL + "/v1/notifications", Client: e.http.Client()}
	reader := application.NewReader(rl, 0, 2)
	items, err := reader.Read(context.Background())
	if err != nil || len(items) != 3 || items[2].OriginatorID.String() != id || items[2].OriginatorVersion != 1 || items[2].Topic != "SomethingHappened" {
		t.Fatalf("remote reader: %+v %v", items, err)
	}
}

func TestPage(t *testing.T) {
	e := newEnv(t, "")
	empty := e.must(http.StatusOK, "GET", "/", nil)
	if !strings.Contains(string(empty.raw), "No events yet") {
		t.Fatalf("empty page: %s", empty.raw)
	}
	id := e.createWorld("gods")
	e.must(http.StatusOK, "POST", "/v1/worlds/"+id+"/make-it-so", map[string]any{"what": "x"})
	stream := uuid.NewString()
	// A type name with markup is refused before it can reach the page.
	e.must(http.StatusBadRequest, "POST", "/v1/streams/"+stream+"/events",
		`{"expected_version":0,"aggregate_type":"Order","events":[{"type":"Placed<script>","data":{}}]}`)
	e.must(http.StatusCreated, "POST", "/v1/streams/"+stream+"/events",
		`{"expected_version":0,"aggregate_type":"Order","events":[{"type":"Placed","data":{"x":"<b>"}}]}`)

	page := e.must(http.StatusOK, "GET", "/", nil)
	html := string(page.raw)
	if !strings.HasPrefix(page.header.Get("Content-Type"), "text/html") || !strings.Contains(html, id) || !strings.Contains(html, stream) ||
		!strings.Contains(html, "SomethingHappened") || !strings.Contains(html, ">3</strong> message(s)") ||
		!strings.Contains(html, `<script src="console/console.js">`) || strings.Contains(html, "http://") || strings.Contains(html, "https://") {
		t.Fatalf("page:\n%s", html)
	}
	// The console's files are embedded, relative to the page (so the
	// writer can be mounted under a prefix), and served with their types.
	js := e.must(http.StatusOK, "GET", "/console/console.js", nil)
	css := e.must(http.StatusOK, "GET", "/console/console.css", nil)
	if !strings.HasPrefix(js.header.Get("Content-Type"), "text/javascript") || !strings.Contains(string(js.raw), "esflowConsole") ||
		!strings.HasPrefix(css.header.Get("Content-Type"), "text/css") {
		t.Fatalf("console files: %v %v", js.header, css.header)
	}
	e.must(http.StatusNotFound, "GET", "/console/index.html", nil)
	e.must(http.StatusNotFound, "GET", "/console/nothing.js", nil)
	a := e.must(http.StatusOK, "GET", "/v1/activity", nil)
	streams := a.body["streams"].([]any)
	first := streams[0].(map[string]any)
	if a.num("last_notification") != 3 || len(streams) != 2 || first["stream_id"] != stream || first["aggregate_type"] != "Order" ||
		a.body["backlog"].(map[string]any)["messages"].(float64) != 3 {
		t.Fatalf("activity: %s", a.raw)
	}
}

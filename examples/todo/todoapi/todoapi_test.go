package todoapi_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"

	"github.com/esflow/esflow/examples/todo/todoapi"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/writer"
)

// TestMountedThroughPublicAPI serves a writer with only the to-do domain
// mounted, on a real SQLite store, and drives it over HTTP: the domain's
// commands, optimistic concurrency, the token, the generic stream API
// seeing the same events, and no example domain anywhere.
func TestMountedThroughPublicAPI(t *testing.T) {
	app, err := application.New(context.Background(), application.Config{
		DatabaseURL: "sqlite::memory:", Registry: aggregate.NewRegistry(), CreateTables: true, Outbox: &outbox.Builder{},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	srv, err := writer.New(writer.Config{App: app, Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	todoapi.Mount(srv)
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()

	do := func(method, path, body string, hdr ...string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, ts.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer tok")
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		raw, _ := io.ReadAll(res.Body)
		var m map[string]any
		_ = json.Unmarshal(raw, &m)
		return res.StatusCode, m
	}

	code, body := do("POST", "/v1/lists", `{"title":"groceries"}`)
	if code != 201 {
		t.Fatalf("create: %d %v", code, body)
	}
	id := body["id"].(string)
	if code, body = do("POST", "/v1/lists/"+id+"/items", `{"text":"milk"}`); code != 200 || body["version"] != 2.0 {
		t.Fatalf("add: %d %v", code, body)
	}
	if code, body = do("POST", "/v1/lists/"+id+"/items/0/done", ``, "If-Match", "1"); code != 409 || body["current_version"] != 2.0 {
		t.Fatalf("stale If-Match: %d %v", code, body)
	}
	if code, _ = do("POST", "/v1/lists/"+id+"/items/0/done", ``, "If-Match", "2"); code != 200 {
		t.Fatalf("done: %d", code)
	}
	if code, body = do("POST", "/v1/lists/"+id+"/items/7/done", ``); code != 404 {
		t.Fatalf("no such item: %d %v", code, body)
	}
	code, body = do("GET", "/v1/lists/"+id, "")
	items, _ := body["items"].([]any)
	if code != 200 || body["title"] != "groceries" || len(items) != 1 || items[0].(map[string]any)["done"] != true {
		t.Fatalf("get: %d %v", code, body)
	}
	if code, body = do("GET", "/v1/lists/"+id+"?version=1", ""); code != 200 || len(body["items"].([]any)) != 0 {
		t.Fatalf("historical get: %d %v", code, body)
	}
	// The generic stream API reads the same stream.
	if code, body = do("GET", "/v1/streams/"+id+"/events", ""); code != 200 || len(body["events"].([]any)) != 3 {
		t.Fatalf("stream: %d %v", code, body)
	}
	// Without the token, the mounted command is refused like the writer's own.
	req, _ := http.NewRequest("POST", ts.URL+"/v1/lists", strings.NewReader(`{"title":"x"}`))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 401 {
		t.Fatalf("no token: %d", res.StatusCode)
	}
	// Only what was mounted is served.
	if code, _ = do("POST", "/v1/worlds", `{"ruler":"gaia"}`); code != 404 {
		t.Fatalf("example domain served by a writer that did not mount it: %d", code)
	}
	want := []string{"POST /v1/lists", "GET /v1/lists/{id}", "POST /v1/lists/{id}/items", "POST /v1/lists/{id}/items/{n}/done"}
	got := srv.Routes()
	if strings.Join(got[len(got)-len(want):], ",") != strings.Join(want, ",") {
		t.Fatalf("routes %v", got)
	}
}

// TestWriterImportsNoExample checks the layering: package writer, as built
// for a service, depends on no package under examples/.
func TestWriterImportsNoExample(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/esflow/esflow/pkg/writer").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "github.com/esflow/esflow/examples/") {
			t.Errorf("pkg/writer depends on %s", pkg)
		}
	}
}

package writer

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/outbox"
)

// TestOpenAPIMatchesRoutes checks that openapi.yaml describes exactly the
// routes the server registers, and that mutating operations declare the
// bearer token.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	type operation struct {
		Security  []map[string][]string `yaml:"security"`
		Responses map[string]any        `yaml:"responses"`
	}
	var raw struct {
		OpenAPI string                          `yaml:"openapi"`
		Paths   map[string]map[string]yaml.Node `yaml:"paths"`
	}
	if err := yaml.Unmarshal(openAPI, &raw); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	spec := struct {
		OpenAPI string
		Paths   map[string]map[string]operation
	}{OpenAPI: raw.OpenAPI, Paths: map[string]map[string]operation{}}
	for path, item := range raw.Paths {
		spec.Paths[path] = map[string]operation{}
		for key, node := range item {
			if key == "parameters" {
				continue
			}
			var op operation
			if err := node.Decode(&op); err != nil {
				t.Fatalf("openapi.yaml %s %s: %v", key, path, err)
			}
			spec.Paths[path][key] = op
		}
	}
	if !strings.HasPrefix(spec.OpenAPI, "3.") {
		t.Fatalf("openapi version %q", spec.OpenAPI)
	}
	reg := aggregate.NewRegistry()
	app, err := application.New(context.Background(), application.Config{DatabaseURL: "sqlite::memory:", Registry: reg, CreateTables: true, Outbox: &outbox.Builder{}})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	s, err := New(Config{App: app})
	if err != nil {
		t.Fatal(err)
	}

	var inCode, inSpec []string
	for _, rt := range s.routes {
		op := rt.method + " " + rt.path
		inCode = append(inCode, op)
		o, ok := spec.Paths[rt.path][strings.ToLower(rt.method)]
		if !ok {
			t.Errorf("route %s is not in openapi.yaml", op)
			continue
		}
		if len(o.Responses) == 0 {
			t.Errorf("%s documents no responses", op)
		}
		if secured := len(o.Security) > 0; secured != rt.mutating {
			t.Errorf("%s: spec says security %v, route mutating %v", op, o.Security, rt.mutating)
		}
	}
	for path, ops := range spec.Paths {
		for method := range ops {
			op := strings.ToUpper(method) + " " + path
			inSpec = append(inSpec, op)
			if !slices.Contains(inCode, op) {
				t.Errorf("openapi.yaml describes %s, which the server does not serve", op)
			}
		}
	}
	if len(inSpec) != len(inCode) {
		t.Errorf("%d operations in the spec, %d routes", len(inSpec), len(inCode))
	}
}

// TestVersionConventions checks that the spec says which "version" is a
// count (append and head answers, expected_version) and which is an
// event's own 0-based version, and that the server answers as it says: a
// new stream of two events has version 2, and events 0 and 1.
func TestVersionConventions(t *testing.T) {
	var spec struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]struct {
					Description string `yaml:"description"`
					Items       struct {
						Properties map[string]struct {
							Description string `yaml:"description"`
						} `yaml:"properties"`
					} `yaml:"items"`
				} `yaml:"properties"`
			} `yaml:"schemas"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(openAPI, &spec); err != nil {
		t.Fatal(err)
	}
	sc := spec.Components.Schemas
	for _, c := range []struct{ what, desc, want string }{
		{"AppendResponse.version", sc["AppendResponse"].Properties["version"].Description, "COUNT"},
		{"Head.version", sc["Head"].Properties["version"].Description, "COUNT"},
		{"AppendRequest.expected_version", sc["AppendRequest"].Properties["expected_version"].Description, "COUNT"},
		{"AppendResponse.events[].version", sc["AppendResponse"].Properties["events"].Items.Properties["version"].Description, "0-based"},
		{"Event.version", sc["Event"].Properties["version"].Description, "0-based"},
	} {
		if !strings.Contains(c.desc, c.want) {
			t.Errorf("%s: description %q does not say %s", c.what, c.desc, c.want)
		}
	}

	app, err := application.New(context.Background(), application.Config{DatabaseURL: "sqlite::memory:", Registry: aggregate.NewRegistry(), CreateTables: true, Outbox: &outbox.Builder{}})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	s, err := New(Config{App: app})
	if err != nil {
		t.Fatal(err)
	}
	call := func(method, path, body string, v any) {
		t.Helper()
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		if rec.Code/100 != 2 {
			t.Fatalf("%s %s: %d %s", method, path, rec.Code, rec.Body)
		}
		if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
			t.Fatal(err)
		}
	}
	const id = "0b8a4f0e-5d0c-4c77-9d4c-3f0e2b6a1c55"
	var appended struct {
		Version uint64
		Events  []struct{ Version uint64 }
	}
	call("POST", "/v1/streams/"+id+"/events", `{"expected_version":0,"events":[{"type":"A","data":{}},{"type":"B","data":{}}]}`, &appended)
	var head struct{ Version uint64 }
	call("GET", "/v1/streams/"+id+"/head", "", &head)
	var read struct {
		Events   []struct{ Version uint64 }
		NextFrom uint64 `json:"next_from"`
	}
	call("GET", "/v1/streams/"+id+"/events", "", &read)
	if appended.Version != 2 || len(appended.Events) != 2 || appended.Events[0].Version != 0 || appended.Events[1].Version != 1 ||
		head.Version != 2 || len(read.Events) != 2 || read.Events[0].Version != 0 || read.NextFrom != 2 {
		t.Fatalf("append %+v, head %+v, read %+v", appended, head, read)
	}
}

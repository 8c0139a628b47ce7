package writer

import (
	"context"
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

package domainapi_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/esflow/esflow/examples/domainapi"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/writer"
)

// TestOpenAPIMatchesMount checks that openapi.yaml describes exactly the
// routes Mount adds, mutating ones with the bearer token. The flows
// themselves are tested by package writer's tests, which mount this domain.
func TestOpenAPIMatchesMount(t *testing.T) {
	var spec struct {
		Paths map[string]map[string]yaml.Node `yaml:"paths"`
	}
	if err := yaml.Unmarshal(domainapi.OpenAPI, &spec); err != nil {
		t.Fatal(err)
	}
	app, err := application.New(context.Background(), application.Config{
		DatabaseURL: "sqlite::memory:", Registry: aggregate.NewRegistry(), CreateTables: true, Outbox: &outbox.Builder{},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	srv, err := writer.New(writer.Config{App: app})
	if err != nil {
		t.Fatal(err)
	}
	before := len(srv.Routes())
	domainapi.Mount(srv)
	mounted := srv.Routes()[before:]
	var inSpec []string
	for path, ops := range spec.Paths {
		for method, node := range ops {
			if method == "parameters" {
				continue
			}
			var op struct {
				Security []map[string][]string `yaml:"security"`
			}
			if err := node.Decode(&op); err != nil {
				t.Fatal(err)
			}
			m := strings.ToUpper(method)
			inSpec = append(inSpec, m+" "+path)
			if mutating := m != "GET"; mutating != (len(op.Security) > 0) {
				t.Errorf("%s %s: security %v", m, path, op.Security)
			}
		}
	}
	slices.Sort(inSpec)
	slices.Sort(mounted)
	if !slices.Equal(inSpec, mounted) {
		t.Fatalf("spec %v\nmounted %v", inSpec, mounted)
	}
	if _, _, ok := app.Store.Registry().Lookup("World"); !ok {
		t.Fatal("Mount did not register the domain")
	}
}

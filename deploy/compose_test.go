package deploy_test

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// composeService is the part of a compose service the checks read. Fields
// the compose spec allows in several shapes stay `any` and are normalised.
type composeService struct {
	Image       string         `yaml:"image"`
	Build       any            `yaml:"build"`
	Command     any            `yaml:"command"`
	Entrypoint  any            `yaml:"entrypoint"`
	Environment any            `yaml:"environment"`
	Ports       []any          `yaml:"ports"`
	Volumes     []any          `yaml:"volumes"`
	DependsOn   any            `yaml:"depends_on"`
	Healthcheck *composeHealth `yaml:"healthcheck"`
}

type composeHealth struct {
	Test    any  `yaml:"test"`
	Disable bool `yaml:"disable"`
}

// checkCompose checks docker-compose.yml and returns the services it builds
// from the Dockerfile.
func checkCompose(t *testing.T, cb *codebase, path string) []string {
	r := reporter{t: t, where: path}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Services map[string]composeService `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &file); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(file.Services) == 0 {
		t.Fatalf("%s: no services", path)
	}
	dir := filepath.Dir(path)
	dockerfile, err := filepath.Abs(filepath.Join(dir, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}

	var built []string
	for _, name := range slices.Sorted(maps.Keys(file.Services)) {
		s := file.Services[name]
		sr := r.at("service %s", name)

		healthy := s.Healthcheck != nil && !s.Healthcheck.Disable && s.Healthcheck.Test != nil
		for dep, cond := range dependsOn(s.DependsOn) {
			d, ok := file.Services[dep]
			switch {
			case !ok:
				sr.errorf("depends_on %s: no such service", dep)
			case cond == "service_healthy" && (d.Healthcheck == nil || d.Healthcheck.Disable || d.Healthcheck.Test == nil):
				sr.errorf("depends_on %s with condition service_healthy, but %s has no healthcheck", dep, dep)
			}
		}
		for _, v := range s.Volumes {
			if src, _, ok := strings.Cut(fmt.Sprint(v), ":"); ok && strings.HasPrefix(src, ".") {
				if _, err := os.Stat(filepath.Join(dir, src)); err != nil {
					sr.errorf("volume %v: %v", v, err)
				}
			}
		}

		build, ok := s.Build.(map[string]any)
		if !ok {
			continue // an upstream image (PostgreSQL, Kafka)
		}
		ctxDir := filepath.Join(dir, fmt.Sprint(build["context"]))
		df, err := filepath.Abs(filepath.Join(ctxDir, fmt.Sprint(build["dockerfile"])))
		if err != nil || df != dockerfile {
			sr.errorf("build uses %s, want %s", df, dockerfile)
			continue
		}
		svc := stringMap(build["args"])["SERVICE"]
		if svc == "" {
			sr.errorf("build has no args.SERVICE")
			continue
		}
		built = append(built, svc)
		if s.Image != "" && imageService(s.Image) != svc {
			sr.errorf("image %s does not end in /%s (the Kubernetes manifests find the binary by the image name)", s.Image, svc)
		}
		b, err := cb.binary(svc)
		if err != nil {
			sr.check(err)
			continue
		}
		if s.Entrypoint != nil {
			sr.errorf("sets entrypoint; the image's entrypoint is the binary")
		}
		args := stringList(s.Command)
		sr.check(b.checkArgs(args)...)
		port, err := b.httpPort(args)
		if err != nil {
			sr.check(err)
			continue
		}
		for _, k := range slices.Sorted(maps.Keys(stringMap(s.Environment))) {
			sr.check(b.checkEnv(k))
		}
		for _, p := range s.Ports {
			spec := fmt.Sprint(p)
			if m, ok := p.(map[string]any); ok {
				spec = fmt.Sprint(m["target"])
			}
			spec = strings.TrimSuffix(strings.TrimSuffix(spec, "/tcp"), "/udp")
			if target := spec[strings.LastIndex(spec, ":")+1:]; target != port {
				sr.errorf("ports %v: container port %s, but cmd/%s listens on %s", p, target, svc, port)
			}
		}
		if !healthy {
			sr.errorf("no healthcheck")
			continue
		}
		test := strings.Join(stringList(s.Healthcheck.Test), " ")
		m := localURL.FindStringSubmatch(test)
		if m == nil {
			sr.errorf("healthcheck %q calls no http://127.0.0.1:<port>/<path>", test)
			continue
		}
		if m[1] != port {
			sr.errorf("healthcheck port %s, but cmd/%s listens on %s", m[1], svc, port)
		}
		sr.check(b.checkPath(m[2]))
	}
	if len(built) == 0 {
		r.errorf("no service is built from %s", dockerfile)
	}
	return built
}

// imageService is the last path element of an image reference, without
// tag or digest: esflow/relay:dev -> relay.
func imageService(image string) string {
	if i := strings.Index(image, "@"); i >= 0 {
		image = image[:i]
	}
	image = image[strings.LastIndex(image, "/")+1:]
	name, _, _ := strings.Cut(image, ":")
	return name
}

// dependsOn normalises depends_on (a list, or a map with conditions) to
// service -> condition ("service_started" for the list form).
func dependsOn(v any) map[string]string {
	out := map[string]string{}
	switch v := v.(type) {
	case []any:
		for _, s := range v {
			out[fmt.Sprint(s)] = "service_started"
		}
	case map[string]any:
		for s, c := range v {
			cond := "service_started"
			if m, ok := c.(map[string]any); ok && m["condition"] != nil {
				cond = fmt.Sprint(m["condition"])
			}
			out[s] = cond
		}
	}
	return out
}

// stringMap normalises environment / args (a map, or a list of KEY=VALUE).
func stringMap(v any) map[string]string {
	out := map[string]string{}
	switch v := v.(type) {
	case map[string]any:
		for k, val := range v {
			out[k] = fmt.Sprint(val)
		}
	case []any:
		for _, e := range v {
			k, val, _ := strings.Cut(fmt.Sprint(e), "=")
			out[k] = val
		}
	}
	return out
}

// stringList normalises command / healthcheck.test (a list, or a string
// split on spaces).
func stringList(v any) []string {
	switch v := v.(type) {
	case string:
		return strings.Fields(v)
	case []any:
		out := make([]string, len(v))
		for i, e := range v {
			out[i] = fmt.Sprint(e)
		}
		return out
	}
	return nil
}

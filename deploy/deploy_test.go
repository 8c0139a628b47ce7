package deploy_test

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
)

// TestDeployFiles parses the Dockerfile, docker-compose.yml and the
// Kubernetes manifests and checks every binary, flag, environment variable,
// port and probe path they name against the code (truth_test.go). A renamed
// flag or variable, a changed -http-addr default or a missing cmd/ directory
// fails it.
func TestDeployFiles(t *testing.T) {
	cb := newCodebase(t)
	named := map[string][]string{} // file -> services it deploys
	t.Run("Dockerfile", func(t *testing.T) { named["Dockerfile"] = checkDockerfile(t, cb, "Dockerfile") })
	t.Run("compose", func(t *testing.T) { named["docker-compose.yml"] = checkCompose(t, cb, "docker-compose.yml") })
	t.Run("k8s", func(t *testing.T) { named["k8s/"] = checkK8s(t, cb, "k8s") })

	// The three deploy the same services.
	var first string
	for _, file := range slices.Sorted(maps.Keys(named)) {
		slices.Sort(named[file])
		if first == "" {
			first = file
			continue
		}
		if !slices.Equal(named[file], named[first]) {
			t.Errorf("%s deploys %v but %s deploys %v", file, named[file], first, named[first])
		}
	}
	for _, svc := range named[first] {
		if _, err := cb.binary(svc); err != nil {
			t.Errorf("deployed service %s: %v", svc, err)
		}
	}
	if !t.Failed() {
		for _, svc := range named[first] {
			b, _ := cb.binary(svc)
			t.Logf("cmd/%s: flags %s; env %s", svc, sortedKeys(b.Flags), sortedKeys(b.Env))
		}
	}
}

// reporter collects check failures with the place they refer to.
type reporter struct {
	t     *testing.T
	where string
}

func (r reporter) errorf(format string, args ...any) {
	r.t.Helper()
	r.t.Errorf("%s: %s", r.where, fmt.Sprintf(format, args...))
}

func (r reporter) check(errs ...error) {
	r.t.Helper()
	for _, err := range errs {
		if err != nil {
			r.t.Errorf("%s: %v", r.where, err)
		}
	}
}

func (r reporter) at(format string, args ...any) reporter {
	return reporter{t: r.t, where: r.where + ": " + fmt.Sprintf(format, args...)}
}

// subset reports whether every label of sel is in labels (and sel is not
// empty: an empty selector matches everything, which is never meant here).
func subset(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func sortedKeys[K cmp.Ordered, V any](m map[K]V) string {
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprint(k)
	}
	return strings.Join(parts, " ")
}

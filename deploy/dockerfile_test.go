package deploy_test

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	Line int
	Cmd  string // upper case: FROM, RUN, …
	Args string
}

// stage is one FROM … [AS name] section.
type stage struct {
	From, Name string
	Line       int
	Body       []instruction
}

// parseDockerfile returns the ARGs before the first FROM (name -> default)
// and the stages.
func parseDockerfile(path string) (map[string]string, []*stage, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	var (
		instrs []instruction
		cur    strings.Builder
		start  int
	)
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue // comments may sit inside a continued instruction too
		}
		if cur.Len() == 0 {
			start = n
		}
		if body, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(body + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		instrs = append(instrs, instruction{Line: start, Cmd: strings.ToUpper(cmd), Args: strings.TrimSpace(args)})
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		return nil, nil, err
	}
	if cur.Len() > 0 {
		return nil, nil, fmt.Errorf("%s: the file ends inside a continued instruction", path)
	}
	global := map[string]string{}
	var stages []*stage
	for _, in := range instrs {
		switch {
		case in.Cmd == "FROM":
			f := strings.Fields(in.Args)
			st := &stage{Line: in.Line}
			for len(f) > 0 && strings.HasPrefix(f[0], "--") {
				f = f[1:] // --platform=…
			}
			if len(f) == 0 {
				return nil, nil, fmt.Errorf("%s:%d: FROM without an image", path, in.Line)
			}
			st.From = f[0]
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.Name = f[2]
			}
			stages = append(stages, st)
		case len(stages) == 0 && in.Cmd == "ARG":
			name, def, _ := strings.Cut(in.Args, "=")
			global[name] = def
		case len(stages) == 0:
			return nil, nil, fmt.Errorf("%s:%d: %s before the first FROM", path, in.Line, in.Cmd)
		default:
			st := stages[len(stages)-1]
			st.Body = append(st.Body, in)
		}
	}
	return global, stages, nil
}

var (
	localURL = regexp.MustCompile(`https?://(?:127\.0\.0\.1|localhost|\[::1\]):(\d+)(/[^\s"',]*)`)
	uidOnly  = regexp.MustCompile(`^(\d+)(?::\d+)?$`)
)

// checkDockerfile checks the Dockerfile and returns the services its run-*
// stages build.
func checkDockerfile(t *testing.T, cb *codebase, path string) []string {
	r := reporter{t: t, where: path}
	args, stages, err := parseDockerfile(path)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*stage{}
	for _, st := range stages {
		if st.Name != "" {
			byName[st.Name] = st
		}
	}

	// The build arg that selects the service defaults to a real command.
	def, ok := args["SERVICE"]
	if !ok {
		r.errorf("no global ARG SERVICE (the build arg that selects the service)")
	} else if !cb.cmdExists(def) {
		r.errorf("ARG SERVICE=%s: no cmd/%s/main.go", def, def)
	}

	// The builder: the Go version of go.mod, static binaries, ./cmd/$SERVICE.
	goVer, err := cb.goVersion()
	if err != nil {
		t.Fatal(err)
	}
	build := byName["build"]
	if build == nil {
		t.Fatalf("%s: no stage named build", path)
	}
	if !strings.HasPrefix(build.From, "golang:"+goVer) {
		r.errorf("build stage FROM %s, want golang:%s (go.mod)", build.From, goVer)
	}
	var cgoOff, buildsService bool
	for _, in := range build.Body {
		cgoOff = cgoOff || (in.Cmd == "ENV" || in.Cmd == "RUN") && strings.Contains(in.Args, "CGO_ENABLED=0")
		buildsService = buildsService || in.Cmd == "RUN" && strings.Contains(in.Args, "go build") &&
			(strings.Contains(in.Args, "./cmd/${SERVICE}") || strings.Contains(in.Args, "./cmd/$SERVICE"))
	}
	if !cgoOff {
		r.errorf("build stage never sets CGO_ENABLED=0")
	}
	if !buildsService {
		r.errorf("build stage has no RUN … go build … ./cmd/${SERVICE}")
	}

	// The final stage is the run-<service> stage the build arg names.
	if last := stages[len(stages)-1]; last.From != "run-${SERVICE}" && last.From != "run-$SERVICE" {
		r.errorf("last stage FROM %s, want FROM run-${SERVICE}", last.From)
	}

	// Every run-<service> stage: an existing command, its port, a health
	// check on a path it serves, a numeric non-root user, not a Go image.
	var services []string
	for _, st := range stages {
		svc, ok := strings.CutPrefix(st.Name, "run-")
		if !ok {
			continue
		}
		services = append(services, svc)
		sr := r.at("stage %s (line %d)", st.Name, st.Line)
		b, err := cb.binary(svc)
		if err != nil {
			sr.check(err)
			continue
		}
		port, err := b.httpPort(nil)
		if err != nil {
			sr.check(err)
			continue
		}
		var user, entrypoint, root string
		var exposed []string
		var health *instruction
		for s := st; s != nil; s = byName[s.From] {
			for i := len(s.Body) - 1; i >= 0; i-- {
				in := s.Body[i]
				switch in.Cmd {
				case "USER":
					user = firstSet(user, in.Args)
				case "ENTRYPOINT":
					entrypoint = firstSet(entrypoint, in.Args)
				case "HEALTHCHECK":
					if health == nil {
						health = &s.Body[i]
					}
				case "EXPOSE":
					if s == st {
						exposed = append(exposed, strings.Fields(in.Args)...)
					}
				}
			}
			root = s.From
		}
		if strings.HasPrefix(root, "golang:") {
			sr.errorf("runs on the Go toolchain image %s; want a small runtime image", root)
		}
		if m := uidOnly.FindStringSubmatch(user); m == nil {
			sr.errorf("USER %q: want a numeric non-root uid[:gid] (Kubernetes runAsNonRoot needs a number)", user)
		} else if uid, _ := strconv.Atoi(m[1]); uid == 0 {
			sr.errorf("USER %q is root", user)
		}
		if entrypoint == "" {
			sr.errorf("no ENTRYPOINT")
		}
		if len(exposed) != 1 || strings.TrimSuffix(exposed[0], "/tcp") != port {
			sr.errorf("EXPOSE %v, want exactly %s (cmd/%s -http-addr default)", exposed, port, svc)
		}
		if health == nil {
			sr.errorf("no HEALTHCHECK")
		} else if m := localURL.FindStringSubmatch(health.Args); m == nil {
			sr.errorf("HEALTHCHECK (line %d) calls no http://127.0.0.1:<port>/<path>", health.Line)
		} else {
			if m[1] != port {
				sr.errorf("HEALTHCHECK (line %d) port %s, but cmd/%s listens on %s", health.Line, m[1], svc, port)
			}
			sr.check(b.checkPath(m[2]))
		}
	}
	if len(services) == 0 {
		r.errorf("no run-<service> stages")
	}
	return services
}

// firstSet returns have if set, else v: the last instruction in a stage wins,
// and a stage's own instructions win over its parent's.
func firstSet(have, v string) string {
	if have != "" {
		return have
	}
	return v
}

package deploy_test

import (
	"bytes"
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// This file derives the truth the deploy files are checked against from the
// code itself: the flags a binary prints for -h (it is built for that), and
// the environment variables and HTTP paths named in the Go sources the
// binary is built from. Nothing here lists a flag or variable by name.

// flagInfo is one flag as the binary's -h output describes it.
type flagInfo struct {
	Default string // "" when the usage shows no default
	Bool    bool   // a boolean flag: may be given as -name alone
}

// binary is what one cmd/<name> program really accepts.
type binary struct {
	Name  string
	Flags map[string]flagInfo
	Env   map[string]bool // environment variable names its sources read
	Paths map[string]bool // string literals in its sources that look like URL paths
}

// codebase builds and inspects cmd binaries on demand, once each.
type codebase struct {
	root   string // module root
	module string // module path
	bin    string // directory for built binaries
	seen   map[string]*binary
	errs   map[string]error
}

func newCodebase(t *testing.T) *codebase {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatalf("module root: %v", err)
	}
	m := regexp.MustCompile(`(?m)^module\s+(\S+)`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("go.mod has no module line")
	}
	return &codebase{root: root, module: string(m[1]), bin: t.TempDir(),
		seen: map[string]*binary{}, errs: map[string]error{}}
}

// goVersion returns the major.minor Go version go.mod asks for ("1.26").
func (c *codebase) goVersion() (string, error) {
	mod, err := os.ReadFile(filepath.Join(c.root, "go.mod"))
	if err != nil {
		return "", err
	}
	m := regexp.MustCompile(`(?m)^go\s+(\d+)\.(\d+)`).FindSubmatch(mod)
	if m == nil {
		return "", fmt.Errorf("go.mod has no go line")
	}
	return string(m[1]) + "." + string(m[2]), nil
}

// cmdExists reports whether cmd/<name> is a main package directory.
func (c *codebase) cmdExists(name string) bool {
	if name == "" || strings.ContainsAny(name, `/\.`) {
		return false
	}
	_, err := os.Stat(filepath.Join(c.root, "cmd", name, "main.go"))
	return err == nil
}

// binary returns what cmd/<name> accepts, building it the first time.
func (c *codebase) binary(name string) (*binary, error) {
	if b, ok := c.seen[name]; ok {
		return b, c.errs[name]
	}
	b, err := c.inspect(name)
	c.seen[name], c.errs[name] = b, err
	return b, err
}

func (c *codebase) inspect(name string) (*binary, error) {
	if !c.cmdExists(name) {
		return nil, fmt.Errorf("cmd/%s does not exist in the repository (no cmd/%s/main.go)", name, name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	exe := filepath.Join(c.bin, name)
	if out, err := c.goCmd(ctx, "build", "-ldflags=-s -w", "-o", exe, "./cmd/"+name); err != nil {
		return nil, fmt.Errorf("go build ./cmd/%s: %w\n%s", name, err, out)
	}
	flags, flagEnv, err := helpFlags(ctx, exe)
	if err != nil {
		return nil, fmt.Errorf("cmd/%s -h: %w", name, err)
	}
	b := &binary{Name: name, Flags: flags, Env: flagEnv, Paths: map[string]bool{}}
	if err := c.scanSources(ctx, "./cmd/"+name, b); err != nil {
		return nil, fmt.Errorf("cmd/%s sources: %w", name, err)
	}
	if len(b.Env) == 0 {
		return nil, fmt.Errorf("cmd/%s: found no environment variable reads in its sources (is the scanner broken?)", name)
	}
	return b, nil
}

func (c *codebase) goCmd(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = c.root
	return cmd.CombinedOutput()
}

var (
	flagHeader = regexp.MustCompile(`^  -([^\s=]+)(?:\s+(\S+))?`)
	flagDef    = regexp.MustCompile(`\(default (.*)\)\s*$`)
	// flagVars is how internal/cli shows the variables a flag falls back
	// to: "[ESFLOW_HTTP_ADDR]" or "[ESFLOW_EVENTSTORE_URL, EVENTSTORE_URL]".
	flagVars = regexp.MustCompile(`\[([A-Z][A-Z0-9_]*(?:, [A-Z][A-Z0-9_]*)*)\]`)
)

// helpFlags runs exe -h, which must exit 0, and parses the flag package's
// usage listing: the flags, and the environment variables the flags fall
// back to (internal/cli derives them from the flag names, so the sources
// do not name them).
func helpFlags(ctx context.Context, exe string) (map[string]flagInfo, map[string]bool, error) {
	cmd := exec.CommandContext(ctx, exe, "-h")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")} // nothing that could make it connect anywhere
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return nil, nil, fmt.Errorf("%w\n%s", err, out.String())
	}
	flags := map[string]flagInfo{}
	env := map[string]bool{}
	var cur string
	var usage strings.Builder
	flush := func() {
		if cur == "" {
			return
		}
		f := flags[cur]
		if m := flagDef.FindStringSubmatch(strings.TrimSpace(usage.String())); m != nil {
			f.Default = m[1]
			if s, err := strconv.Unquote(m[1]); err == nil {
				f.Default = s
			}
		}
		flags[cur] = f
		usage.Reset()
	}
	for _, line := range strings.Split(out.String(), "\n") {
		if m := flagHeader.FindStringSubmatch(line); m != nil {
			flush()
			cur = m[1]
			// The flag package prints no type name for booleans; a one-letter
			// flag may have its usage on the same line after a tab.
			typ := m[2]
			if strings.Contains(line, "\t") {
				typ = ""
				if i := strings.Index(line, "\t"); i >= 0 {
					usage.WriteString(line[i:])
				}
			}
			flags[cur] = flagInfo{Bool: typ == ""}
			continue
		}
		if cur != "" && strings.HasPrefix(line, "    ") {
			usage.WriteString(" " + strings.TrimSpace(line))
			for _, m := range flagVars.FindAllStringSubmatch(line, -1) {
				for _, v := range strings.Split(m[1], ", ") {
					env[v] = true
				}
			}
		}
	}
	flush()
	if len(flags) == 0 {
		return nil, nil, fmt.Errorf("no flags in the -h output:\n%s", out.String())
	}
	return flags, env, nil
}

// httpPort is the port of -http-addr: the value in args when set there,
// else the flag's default.
func (b *binary) httpPort(args []string) (string, error) {
	f, ok := b.Flags["http-addr"]
	if !ok {
		return "", fmt.Errorf("cmd/%s has no -http-addr flag", b.Name)
	}
	addr := f.Default
	for _, a := range args {
		if name, val, _ := strings.Cut(strings.TrimLeft(a, "-"), "="); name == "http-addr" {
			addr = val
		}
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("cmd/%s -http-addr %q: %w", b.Name, addr, err)
	}
	return port, nil
}

// checkArgs reports every argument that is not a flag of b written as
// -name=value (or -name alone for a boolean flag).
func (b *binary) checkArgs(args []string) []error {
	var errs []error
	for _, a := range args {
		if !strings.HasPrefix(a, "-") {
			errs = append(errs, fmt.Errorf("cmd/%s: argument %q is not a flag (write flags as -name=value)", b.Name, a))
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		f, ok := b.Flags[name]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("cmd/%s has no flag -%s (it has %s)", b.Name, name, sortedKeys(b.Flags)))
		case !f.Bool && !hasValue:
			errs = append(errs, fmt.Errorf("cmd/%s: flag -%s takes a value: write -%s=value", b.Name, name, name))
		}
	}
	return errs
}

// checkEnv reports a variable b's sources never read.
func (b *binary) checkEnv(name string) error {
	if !b.Env[name] {
		return fmt.Errorf("cmd/%s reads no environment variable %s (it reads %s)", b.Name, name, sortedKeys(b.Env))
	}
	return nil
}

// checkPath reports an HTTP path b's sources never name.
func (b *binary) checkPath(path string) error {
	if !b.Paths[path] {
		return fmt.Errorf("cmd/%s serves no path %s (no such string in its sources)", b.Name, path)
	}
	return nil
}

var (
	envName  = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)
	pathLike = regexp.MustCompile(`^(?:[A-Z]+ )?(/[a-z0-9_./{}$-]*)$`)
)

// scanSources parses the non-test Go files of every package of this module
// that pkg links and collects, in b:
//   - environment variable names: constant string arguments of calls to
//     functions whose name mentions "env" (os.Getenv, os.LookupEnv, a
//     getenv parameter, a helper such as envOr), constant string arguments of
//     calls that are passed such a function (boolVar(getenv, "X")), and
//     constants named Env* or *Env;
//   - string literals that look like URL paths or ServeMux patterns.
func (c *codebase) scanSources(ctx context.Context, pkg string, b *binary) error {
	out, err := c.goCmd(ctx, "list", "-deps",
		"-f", `{{if .Module}}{{.Module.Path}}{{"\t"}}{{.ImportPath}}{{"\t"}}{{.Dir}}{{"\t"}}{{join .GoFiles ","}}{{end}}`, pkg)
	if err != nil {
		return fmt.Errorf("go list: %w\n%s", err, out)
	}
	fset := token.NewFileSet()
	type file struct {
		pkg string
		ast *ast.File
	}
	var files []file
	consts := map[string]map[string]string{} // import path -> const name -> string value
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 4 || f[0] != c.module || f[3] == "" {
			continue
		}
		consts[f[1]] = map[string]string{}
		for _, name := range strings.Split(f[3], ",") {
			af, err := parser.ParseFile(fset, filepath.Join(f[2], name), nil, parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			files = append(files, file{pkg: f[1], ast: af})
			collectConsts(af, consts[f[1]])
		}
	}
	for _, f := range files {
		imports := map[string]string{} // local name -> import path
		for _, im := range f.ast.Imports {
			p, _ := strconv.Unquote(im.Path.Value)
			local := p[strings.LastIndex(p, "/")+1:]
			if im.Name != nil {
				local = im.Name.Name
			}
			imports[local] = p
		}
		resolve := func(e ast.Expr) (string, bool) {
			switch e := e.(type) {
			case *ast.BasicLit:
				if e.Kind == token.STRING {
					s, err := strconv.Unquote(e.Value)
					return s, err == nil
				}
			case *ast.Ident:
				s, ok := consts[f.pkg][e.Name]
				return s, ok
			case *ast.SelectorExpr:
				if x, ok := e.X.(*ast.Ident); ok {
					s, ok := consts[imports[x.Name]][e.Sel.Name]
					return s, ok
				}
			}
			return "", false
		}
		ast.Inspect(f.ast, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.BasicLit:
				if s, ok := resolve(n); ok {
					if m := pathLike.FindStringSubmatch(s); m != nil {
						b.Paths[m[1]] = true
					}
				}
			case *ast.CallExpr:
				envCall := mentionsEnv(n.Fun)
				for _, a := range n.Args {
					envCall = envCall || mentionsEnv(a)
				}
				if !envCall {
					return true
				}
				for _, a := range n.Args {
					if s, ok := resolve(a); ok && envName.MatchString(s) {
						b.Env[s] = true
					}
				}
			}
			return true
		})
	}
	for _, cs := range consts {
		for name, v := range cs {
			if (strings.HasPrefix(name, "Env") || strings.HasSuffix(name, "Env")) && envName.MatchString(v) {
				b.Env[v] = true
			}
		}
	}
	return nil
}

// mentionsEnv reports whether e names, by its name, a function that reads
// the environment.
func mentionsEnv(e ast.Expr) bool {
	var name string
	switch e := e.(type) {
	case *ast.Ident:
		name = e.Name
	case *ast.SelectorExpr:
		name = e.Sel.Name
	default:
		return false
	}
	return envFunc.MatchString(name)
}

// envFunc matches function names that read the environment (Getenv,
// LookupEnv, getenv, FromEnv, envOr, boolEnv) but not Envelope.
var envFunc = regexp.MustCompile(`(?i:getenv|lookupenv|environ)|^env$|^env[A-Z_]|Env$|Env[A-Z_]`)

// collectConsts records the package-level string constants of f.
func collectConsts(f *ast.File, into map[string]string) {
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if i >= len(vs.Values) {
					continue
				}
				if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
					if v, err := strconv.Unquote(lit.Value); err == nil {
						into[n.Name] = v
					}
				}
			}
		}
	}
}

package cli_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/esflow/esflow/internal/proctest"
)

// TestCommandsBehaveAlike runs every command under cmd/ (found by
// listing the directory, so a new command is checked without being added
// here) as a process and holds it to the rules of package cli: -h and
// -help exit 0 and list every flag with its variable and the other
// variables, -version exits 0 with the build's version, -log-level and
// -log-format exist, and an unknown flag, a bad value (from a flag or its
// variable) or a stray argument exits 2 with a message saying what is
// wrong. None of these runs gets far enough to connect anywhere.
func TestCommandsBehaveAlike(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(filepath.Join(root, "cmd"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(root, "cmd", e.Name(), "main.go")); e.IsDir() && err == nil {
			names = append(names, e.Name())
		}
	}
	if len(names) < 6 {
		t.Fatalf("found only %v under cmd/", names)
	}
	bins := proctest.NewBuilds()
	t.Cleanup(bins.Close)
	pkgs := make([]string, len(names))
	for i, n := range names {
		pkgs[i] = "github.com/esflow/esflow/cmd/" + n
	}
	paths := bins.Paths(t, pkgs...)

	flagLine := regexp.MustCompile(`^  -([a-z0-9-]+)`)
	for i, name := range names {
		bin := paths[i]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for _, h := range []string{"-h", "-help", "--help"} {
				out, errOut, code := runCmd(t, bin, nil, h)
				if code != 0 || errOut != "" {
					t.Fatalf("%s %s: exit %d, stderr %q", name, h, code, errOut)
				}
				if !strings.HasPrefix(out, "Usage: "+name) {
					t.Errorf("%s %s: usage does not start with %q:\n%s", name, h, "Usage: "+name, out)
				}
				if !strings.Contains(out, "\nEnvironment:\n") {
					t.Errorf("%s %s lists no environment variables:\n%s", name, h, out)
				}
				flags := map[string]string{}
				lines := strings.Split(out, "\n")
				for j, l := range lines {
					if m := flagLine.FindStringSubmatch(l); m != nil && j+1 < len(lines) {
						flags[m[1]] = lines[j+1]
					}
				}
				for _, f := range []string{"log-level", "log-format", "version"} {
					if _, ok := flags[f]; !ok {
						t.Errorf("%s has no -%s", name, f)
					}
				}
				for f, usage := range flags {
					want := "[ESFLOW_" + strings.ToUpper(strings.ReplaceAll(f, "-", "_"))
					if f != "version" && f != "broker" && !strings.Contains(usage, want) {
						t.Errorf("%s -%s: usage names no variable %s]: %q", name, f, want, usage)
					}
				}
			}

			out, errOut, code := runCmd(t, bin, nil, "-version")
			if code != 0 || !strings.HasPrefix(out, name+" ") || !strings.Contains(out, "go1.") {
				t.Errorf("%s -version: exit %d, stdout %q, stderr %q", name, code, out, errOut)
			}

			for _, c := range []struct {
				args []string
				env  []string
				want string
			}{
				{[]string{"-no-such-flag"}, nil, "flag provided but not defined: -no-such-flag"},
				{[]string{"-log-level", "loud"}, nil, `-log-level "loud"`},
				{[]string{"-log-format", "xml"}, nil, `-log-format "xml"`},
				{nil, []string{"ESFLOW_LOG_LEVEL=loud"}, `-log-level "loud"`},
				{nil, []string{"ESFLOW_LOG_FORMAT=xml"}, `-log-format "xml"`},
				{[]string{"stray"}, nil, `"stray"`},
				{[]string{"-log-level", "debug", "stray"}, nil, `"stray"`},
			} {
				out, errOut, code := runCmd(t, bin, c.env, c.args...)
				if code != 2 || !strings.Contains(errOut, c.want) || !strings.HasPrefix(errOut, name+": ") {
					t.Errorf("%s %v %v: exit %d (want 2), stderr %q (want %q), stdout %q", name, c.env, c.args, code, errOut, c.want, out)
				}
			}
		})
	}
}

// runCmd runs bin with only PATH, HOME and env in its environment, in a
// fresh directory, and returns its stdout, stderr and exit status.
func runCmd(t *testing.T, bin string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = t.TempDir()
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + cmd.Dir}, env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatalf("%s %v: %v", bin, args, err)
	}
	return o.String(), e.String(), code
}

// TestVersionFromVCS builds a command with VCS stamping in a checkout
// (not a worktree, whose .git is a file the go command does not look
// for) and checks that -version names the revision git names.
func TestVersionFromVCS(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(root, ".git")); err != nil || !fi.IsDir() {
		t.Skip("not a git checkout with a .git directory: the go command stamps no revision")
	}
	rev, err := exec.Command("git", "-C", root, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("git: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "quickstart")
	build := exec.Command("go", "build", "-buildvcs=true", "-o", bin, "./cmd/quickstart")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, _, code := runCmd(t, bin, nil, "-version")
	if want := "revision " + strings.TrimSpace(string(rev))[:12]; code != 0 || !strings.Contains(out, want) {
		t.Fatalf("-version: exit %d, %q; want it to contain %q", code, out, want)
	}
}

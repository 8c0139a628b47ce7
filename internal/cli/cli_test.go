package cli

import (
	"bytes"
	"errors"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// TestPrecedence: a flag wins over its variable, the variable over the
// default, an alias is read after the ESFLOW_ name.
func TestPrecedence(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  map[string]string
		want string
		d    time.Duration
	}{
		{nil, nil, "def", time.Second},
		{nil, map[string]string{"ESFLOW_SOME_NAME": "env", "ESFLOW_WAIT": "5s"}, "env", 5 * time.Second},
		{[]string{"-some-name", "flag"}, map[string]string{"ESFLOW_SOME_NAME": "env"}, "flag", time.Second},
		{nil, map[string]string{"OLD_NAME": "old"}, "old", time.Second},
		{nil, map[string]string{"OLD_NAME": "old", "ESFLOW_SOME_NAME": "new"}, "new", time.Second},
	} {
		fs := New(Command{Name: "x"}, envOf(c.env), &bytes.Buffer{})
		v := fs.String("some-name", "def", "")
		d := fs.Duration("wait", time.Second, "")
		fs.Alias("some-name", "OLD_NAME")
		if err := fs.Parse(c.args); err != nil {
			t.Fatalf("%v %v: %v", c.args, c.env, err)
		}
		if *v != c.want || *d != c.d {
			t.Errorf("%v %v: got %q %s, want %q %s", c.args, c.env, *v, *d, c.want, c.d)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, c := range []struct {
		cmd  Command
		args []string
		env  map[string]string
		want string
	}{
		{Command{Name: "x"}, []string{"extra"}, nil, `unexpected argument "extra"`},
		{Command{Name: "x"}, nil, map[string]string{"ESFLOW_N": "many"}, `ESFLOW_N="many" (for -n)`},
		{Command{Name: "x", Args: "ID", NArgs: 1}, nil, nil, "missing argument"},
		{Command{Name: "x", Args: "ID", NArgs: 1}, []string{"a", "b"}, nil, `unexpected argument "b"`},
		{Command{Name: "x"}, []string{"-log-level", "loud"}, nil, `-log-level "loud"`},
	} {
		fs := New(c.cmd, envOf(c.env), &bytes.Buffer{})
		fs.Int("n", 1, "")
		err := fs.Parse(c.args)
		if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v %v: error %v, want a usage error with %q", c.args, c.env, err, c.want)
		}
	}
}

// TestInterspersed: flags may follow the arguments; local flags read no
// variable.
func TestInterspersed(t *testing.T) {
	fs := New(Command{Name: "x", Args: "ID", NArgs: 1}, envOf(map[string]string{"ESFLOW_O": "json"}), &bytes.Buffer{})
	fs.Local()
	o := fs.String("o", "table", "")
	if err := fs.Parse([]string{"id-1", "-log-level", "debug"}); err != nil {
		t.Fatal(err)
	}
	if got := fs.Args(); len(got) != 1 || got[0] != "id-1" || *o != "table" || fs.LogLevel().String() != "DEBUG" {
		t.Fatalf("args %v, -o %q, level %s", got, *o, fs.LogLevel())
	}
}

func TestHelpAndVersion(t *testing.T) {
	var out bytes.Buffer
	fs := New(Command{Name: "x", Env: []Var{{"DATABASE_URL", "the store"}}}, envOf(nil), &out)
	fs.Int("batch-size", 4000, "most at once")
	if err := fs.Parse([]string{"-h"}); !errors.Is(err, ErrHelp) || ExitCode(&bytes.Buffer{}, "x", err) != 0 {
		t.Fatalf("-h: %v", err)
	}
	for _, want := range []string{"Usage: x [flags]", "  -batch-size int\n    \tmost at once [ESFLOW_BATCH_SIZE] (default 4000)\n",
		`[ESFLOW_LOG_FORMAT] (default "text")`, "Environment:\n  DATABASE_URL  the store\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	fs = New(Command{Name: "x"}, envOf(nil), &out)
	if err := fs.Parse([]string{"-version"}); !errors.Is(err, ErrVersion) || !strings.HasPrefix(out.String(), "x ") {
		t.Fatalf("-version: %v, %q", err, out.String())
	}
}

func TestDescribe(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/esflow/esflow", Version: "v0.3.0"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "61beaf64bb5f388ce32004fc4ced05c6981beaa0"},
			{Key: "vcs.time", Value: "2026-12-02T15:51:26Z"}, {Key: "vcs.modified", Value: "true"}}}
	if got, want := describe(bi), "v0.3.0, revision 61beaf64bb5f+dirty (2026-12-02T15:51:26Z), go1.26.8"; got != want {
		t.Errorf("describe = %q, want %q", got, want)
	}
	if got, want := describe(&debug.BuildInfo{GoVersion: "go1.26.8"}), "(devel), revision unknown, go1.26.8"; got != want {
		t.Errorf("describe = %q, want %q", got, want)
	}
}

func TestExitCode(t *testing.T) {
	var w bytes.Buffer
	if c := ExitCode(&w, "x", Usagef("bad")); c != 2 || w.String() != "x: bad\n" {
		t.Errorf("usage: %d %q", c, w.String())
	}
	w.Reset()
	if c := ExitCode(&w, "x", errors.New("boom")); c != 1 || w.String() != "x: boom\n" {
		t.Errorf("other: %d %q", c, w.String())
	}
	if c := ExitCode(&w, "x", nil); c != 0 {
		t.Errorf("nil: %d", c)
	}
}

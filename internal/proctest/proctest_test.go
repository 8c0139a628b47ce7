package proctest

import (
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

var builds = NewBuilds()

func TestMain(m *testing.M) {
	code := m.Run()
	builds.Close()
	os.Exit(code)
}

func TestEnviron(t *testing.T) {
	base := []string{"A=1", "KAFKA_BROKERS=x", "KAFKA_TLS=1", "DATABASE_URL=old", "KEEP=yes"}
	got := Environ(base, []string{"DATABASE_URL=new", "B=2"}, []string{"KAFKA_*", "A"})
	want := []string{"KEEP=yes", "DATABASE_URL=new", "B=2"}
	if !slices.Equal(got, want) {
		t.Errorf("Environ = %v, want %v", got, want)
	}
}

func TestProcessLifecycle(t *testing.T) {
	bin := builds.Path(t, "./testdata/child")
	if again := builds.Path(t, "./testdata/child"); again != bin {
		t.Errorf("second Path = %s, want the first build %s", again, bin)
	}
	t.Setenv("PROCTEST_DROPPED", "leaked")
	addr := FreeAddr(t)

	p := Start(t, Command{
		Name: "child", Path: bin, Args: []string{"-http", addr, "x", "y"},
		Env: []string{"PROCTEST_VALUE=v"}, Unset: []string{"PROCTEST_DROPPED"},
	})
	p.WaitOutput(t, "child ready", 10*time.Second)
	p.WaitHTTP(t, "http://"+addr+"/", 10*time.Second)
	if out := p.Output(); !strings.Contains(out, `args [x y] value "v" inherited ""`) {
		t.Errorf("output %q: arguments or environment not as given", out)
	}
	if err := p.Stop(10 * time.Second); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if p.Running() || !strings.Contains(p.Output(), "bye") {
		t.Errorf("after SIGTERM: running %v, output %q", p.Running(), p.Output())
	}

	k := Start(t, Command{Name: "killed", Path: bin})
	k.WaitOutput(t, "child ready", 10*time.Second)
	k.Kill(t)
	if ws, ok := exitStatus(k); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("after Kill: exit %v", k.Err())
	}

	stubborn := Start(t, Command{Name: "stubborn", Path: bin, Args: []string{"-ignore-term"}})
	stubborn.WaitOutput(t, "child ready", 10*time.Second)
	if err := stubborn.Stop(300 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("Stop of a process ignoring SIGTERM = %v, want it killed", err)
	}
}

func exitStatus(p *Process) (syscall.WaitStatus, bool) {
	if p.cmd.ProcessState == nil {
		return 0, false
	}
	ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ws, ok
}

func TestBuildFailureIsReported(t *testing.T) {
	if _, err := builds.Build(t.Context(), "./testdata/does-not-exist"); err == nil {
		t.Fatal("building a missing package succeeded")
	}
}

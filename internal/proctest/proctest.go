// Package proctest runs the project's commands as real subprocesses in
// tests: it builds a command once per test binary, starts it with its own
// environment and flags, waits for a log line or an HTTP endpoint, and
// stops it with SIGTERM or kills it with SIGKILL, keeping its output for
// the failure message.
//
// Usage:
//
//	var bins *proctest.Builds
//
//	func TestMain(m *testing.M) {
//		bins = proctest.NewBuilds()
//		code := m.Run()
//		bins.Close()
//		os.Exit(code)
//	}
//
//	func TestCrash(t *testing.T) {
//		p := proctest.Start(t, proctest.Command{
//			Name: "relay", Path: bins.Path(t, "github.com/esflow/esflow/cmd/relay"),
//			Args: []string{"-http-addr", addr}, Env: []string{"DATABASE_URL=" + dsn},
//		})
//		p.WaitHTTP(t, "http://"+addr+"/healthz", 15*time.Second)
//		p.Kill(t)
//	}
//
// Every wait is bounded and fails the test with what the process printed.
// On Linux a child is killed with the test process (PR_SET_PDEATHSIG), so
// a test binary killed by a timeout leaves nothing running.
package proctest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Builds compiles main packages with `go build` into a temporary
// directory, each at most once, and removes them on Close.
type Builds struct {
	mu    sync.Mutex
	dir   string
	dirOK bool
	bins  map[string]*build
}

type build struct {
	once sync.Once
	path string
	err  error
}

// NewBuilds returns an empty set of builds; nothing is compiled until
// Path asks for it.
func NewBuilds() *Builds { return &Builds{bins: map[string]*build{}} }

// Path returns the binary of the main package pkg (an import path or a
// directory relative to the test's working directory), building it on
// first use. A failed build fails the test, here and for every later
// caller.
func (b *Builds) Path(t testing.TB, pkg string) string {
	t.Helper()
	path, err := b.Build(context.Background(), pkg)
	if err != nil {
		t.Fatalf("proctest: %v", err)
	}
	return path
}

// Paths is Path for several packages, built concurrently.
func (b *Builds) Paths(t testing.TB, pkgs ...string) []string {
	t.Helper()
	paths := make([]string, len(pkgs))
	errs := make([]error, len(pkgs))
	var wg sync.WaitGroup
	for i, pkg := range pkgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			paths[i], errs[i] = b.Build(context.Background(), pkg)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("proctest: %v", err)
	}
	return paths
}

// Build is Path without a test: it returns the binary of pkg, building it
// on first use.
func (b *Builds) Build(ctx context.Context, pkg string) (string, error) {
	b.mu.Lock()
	if !b.dirOK {
		dir, err := os.MkdirTemp("", "proctest-bin-")
		if err != nil {
			b.mu.Unlock()
			return "", fmt.Errorf("temp dir for binaries: %w", err)
		}
		b.dir, b.dirOK = dir, true
	}
	bl := b.bins[pkg]
	if bl == nil {
		bl = &build{}
		b.bins[pkg] = bl
	}
	dir := b.dir
	b.mu.Unlock()

	bl.once.Do(func() {
		name := filepath.Base(strings.TrimSuffix(pkg, "/"))
		if name == "." || name == "/" {
			name = "main"
		}
		out := filepath.Join(dir, fmt.Sprintf("%s-%d", name, len(pkg)))
		for i := 0; fileExists(out); i++ {
			out = filepath.Join(dir, fmt.Sprintf("%s-%d-%d", name, len(pkg), i))
		}
		cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stderr, &stderr
		if err := cmd.Run(); err != nil {
			bl.err = fmt.Errorf("go build %s: %w\n%s", pkg, err, stderr.String())
			return
		}
		bl.path = out
	})
	return bl.path, bl.err
}

// Close removes the built binaries.
func (b *Builds) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dirOK {
		_ = os.RemoveAll(b.dir)
		b.dirOK = false
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// Command describes a process to start.
type Command struct {
	// Name labels the process in failure messages. Default the binary's
	// base name.
	Name string
	// Path is the binary (see Builds.Path). Required.
	Path string
	// Args are its arguments.
	Args []string
	// Env holds KEY=VALUE pairs added to the test's environment; an
	// inherited variable of the same name is dropped.
	Env []string
	// Unset lists names of inherited variables to drop; an entry ending in
	// "*" drops every variable with that prefix ("KAFKA_*").
	Unset []string
	// Dir is the working directory. Default the test's.
	Dir string
	// OutputTail is how many bytes of output a failed test logs at
	// cleanup. Default 4000; negative logs nothing.
	OutputTail int
}

// Process is a started command. Its methods are safe for concurrent use.
type Process struct {
	name string
	cmd  *exec.Cmd
	out  *SyncBuffer
	done chan struct{}
	err  error // of Wait, valid once done is closed
}

// Start starts the command; stdout and stderr are collected together. At
// the test's cleanup a process still running is stopped (SIGTERM, then
// SIGKILL) and, if the test failed, the tail of its output is logged.
func Start(t testing.TB, c Command) *Process {
	t.Helper()
	p, err := StartCommand(c)
	if err != nil {
		t.Fatalf("proctest: %v", err)
	}
	tailN := c.OutputTail
	if tailN == 0 {
		tailN = 4000
	}
	t.Cleanup(func() {
		_ = p.Stop(10 * time.Second)
		if t.Failed() && tailN > 0 {
			t.Logf("--- %s output (exit: %v) ---\n%s", p.name, p.err, Tail(p.Output(), tailN))
		}
	})
	return p
}

// StartCommand starts the command without a test; the caller must Stop
// or Kill it.
func StartCommand(c Command) (*Process, error) {
	if c.Path == "" {
		return nil, errors.New("start: no binary path")
	}
	name := c.Name
	if name == "" {
		name = filepath.Base(c.Path)
	}
	cmd := exec.Command(c.Path, c.Args...)
	cmd.Dir = c.Dir
	cmd.Env = Environ(os.Environ(), c.Env, c.Unset)
	dieWithParent(cmd)
	p := &Process{name: name, cmd: cmd, out: new(SyncBuffer), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		err := cmd.Wait()
		p.err = err
		close(p.done)
	}()
	return p, nil
}

// Environ returns base without the variables named in set or matched by
// unset (a trailing "*" matches a prefix), followed by set.
func Environ(base, set, unset []string) []string {
	drop := func(kv string) bool {
		name, _, _ := strings.Cut(kv, "=")
		for _, s := range set {
			if n, _, _ := strings.Cut(s, "="); n == name {
				return true
			}
		}
		for _, u := range unset {
			if prefix, ok := strings.CutSuffix(u, "*"); ok {
				if strings.HasPrefix(name, prefix) {
					return true
				}
			} else if u == name {
				return true
			}
		}
		return false
	}
	env := make([]string, 0, len(base)+len(set))
	for _, kv := range base {
		if !drop(kv) {
			env = append(env, kv)
		}
	}
	return append(env, set...)
}

// Name returns the process's label.
func (p *Process) Name() string { return p.name }

// Pid returns the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Running reports whether the process has not exited yet.
func (p *Process) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Err returns the exit error (nil for status 0); valid once Done is
// closed, nil before.
func (p *Process) Err() error {
	select {
	case <-p.done:
		return p.err
	default:
		return nil
	}
}

// Output returns everything the process printed so far.
func (p *Process) Output() string { return p.out.String() }

// Kill sends SIGKILL and waits for the process to be gone.
func (p *Process) Kill(t testing.TB) {
	t.Helper()
	if err := p.Signal(syscall.SIGKILL); err != nil && p.Running() {
		t.Fatalf("%s: SIGKILL: %v", p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: still running 10s after SIGKILL", p.name)
	}
}

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error {
	if !p.Running() {
		return nil
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("%s: %v: %w", p.name, sig, err)
	}
	return nil
}

// Stop sends SIGTERM and waits up to timeout for the process to exit,
// then kills it. It returns the exit error of a process that exited on
// SIGTERM (nil for status 0), or an error saying it had to be killed.
func (p *Process) Stop(timeout time.Duration) error {
	if !p.Running() {
		return p.err
	}
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		_ = p.Signal(syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("%s: did not exit within %s of SIGTERM; killed", p.name, timeout)
	}
}

// Wait waits up to timeout for the process to exit on its own and
// returns its exit error; it fails the test if it is still running.
func (p *Process) Wait(t testing.TB, timeout time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("%s: still running after %s", p.name, timeout)
		return nil
	}
}

// WaitOutput waits until the output contains substr, failing the test
// after timeout or if the process exits first.
func (p *Process) WaitOutput(t testing.TB, substr string, timeout time.Duration) {
	t.Helper()
	p.waitFor(t, timeout, fmt.Sprintf("output containing %q", substr), func() (bool, string) {
		return strings.Contains(p.Output(), substr), ""
	})
}

// WaitHTTP waits until GET url answers 200 OK, failing the test after
// timeout or if the process exits first.
func (p *Process) WaitHTTP(t testing.TB, url string, timeout time.Duration) {
	t.Helper()
	client := http.Client{Timeout: 2 * time.Second}
	p.waitFor(t, timeout, "200 OK from GET "+url, func() (bool, string) {
		resp, err := client.Get(url)
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
}

func (p *Process) waitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if detail != "" {
			last = detail
		}
		if !p.Running() {
			t.Fatalf("%s exited (%v) while waiting for %s; last: %s\n%s", p.name, p.err, what, last, Tail(p.Output(), 3000))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %s within %s; last: %s\n%s", p.name, what, timeout, last, Tail(p.Output(), 3000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Eventually polls cond every interval until it reports true, failing
// the test after timeout with what and cond's last detail.
func Eventually(t testing.TB, timeout, interval time.Duration, what string, cond func() (ok bool, detail string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %s; last: %s", what, timeout, detail)
		}
		time.Sleep(interval)
	}
}

// FreeAddr returns a loopback host:port that was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proctest: free port: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// Tail returns the last n bytes of s, marked when cut.
func Tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// SyncBuffer is a bytes.Buffer that several goroutines may write and
// read at once: a process's output copier and the test reading it, or a
// service's logger and its test.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

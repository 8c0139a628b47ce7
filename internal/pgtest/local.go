package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	dirPrefix = "esflow-pgtest-"
	ownerFile = "owner.pid"
)

var errNoBinaries = errors.New("no local PostgreSQL binaries (initdb, postgres)")

// findBinDir returns a directory holding initdb and postgres.
func findBinDir() (string, error) {
	has := func(dir string) bool {
		for _, b := range []string{"initdb", "postgres"} {
			fi, err := os.Stat(filepath.Join(dir, b))
			if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
				return false
			}
		}
		return true
	}
	if pgc, err := exec.LookPath("pg_config"); err == nil {
		out, err := exec.Command(pgc, "--bindir").Output()
		if dir := strings.TrimSpace(string(out)); err == nil && dir != "" && has(dir) {
			return dir, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		// Resolve symlinks so postgres is looked up next to the real initdb.
		if real, err := filepath.EvalSymlinks(p); err == nil && has(filepath.Dir(real)) {
			return filepath.Dir(real), nil
		}
		if has(filepath.Dir(p)) {
			return filepath.Dir(p), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	// Highest major version first.
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, d := range dirs {
		if has(d) {
			return d, nil
		}
	}
	return "", errNoBinaries
}

// runAs holds the credentials the server binaries run with: initdb and
// postgres refuse to run as root.
type runAs struct {
	cred     *syscall.Credential
	uid, gid int
}

func serverUser() (*runAs, error) {
	if os.Geteuid() != 0 {
		return &runAs{uid: -1, gid: -1}, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root and no %q OS user to run PostgreSQL as: %w", "postgres", err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, fmt.Errorf("uid of postgres: %w", err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return nil, fmt.Errorf("gid of postgres: %w", err)
	}
	return &runAs{
		cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: false},
		uid:  uid, gid: gid,
	}, nil
}

// command builds a command for a server binary, run as the server user in
// dir, with PG* variables removed from the environment.
func (r *runAs) command(dir, bin string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	env := []string{"LC_ALL=C", "LANG=C"}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG=") {
			continue
		}
		env = append(env, kv)
	}
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: r.cred}
	return cmd
}

// startLocal initialises and starts a throwaway cluster.
func startLocal(ctx context.Context) (*server, error) {
	bin, err := findBinDir()
	if err != nil {
		return nil, err
	}
	as, err := serverUser()
	if err != nil {
		return nil, err
	}
	reapStale()

	dir, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("create cluster dir: %w", err)
	}
	fail := func(err error) (*server, error) {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return fail(fmt.Errorf("write owner pid: %w", err))
	}
	if as.cred != nil {
		if err := os.Chown(dir, as.uid, as.gid); err != nil {
			return fail(fmt.Errorf("chown cluster dir: %w", err))
		}
	}
	data := filepath.Join(dir, "data")

	initdb := as.command(dir, filepath.Join(bin, "initdb"),
		"-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C")
	if out, err := initdb.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("initdb: %w\n%s", err, out))
	}

	port, err := freePort()
	if err != nil {
		return fail(err)
	}
	logPath := filepath.Join(dir, "postgres.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return fail(fmt.Errorf("create log: %w", err))
	}
	pm := as.command(dir, filepath.Join(bin, "postgres"),
		"-D", data,
		"-p", strconv.Itoa(port),
		"-h", "127.0.0.1",
		"-k", dir,
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		"-c", "full_page_writes=off",
		"-c", "max_connections=200",
		"-c", "shared_buffers=128MB",
		"-c", "logging_collector=off",
	)
	pm.Stdout = logFile
	pm.Stderr = logFile
	// If this process dies without stopping the cluster, the kernel sends
	// the postmaster SIGQUIT (immediate shutdown). The signal is tied to
	// the creating OS thread, so the postmaster is started from a goroutine
	// that keeps its thread locked until the postmaster has exited.
	pm.SysProcAttr.Pdeathsig = syscall.SIGQUIT

	started := make(chan error, 1)
	exited := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := pm.Start(); err != nil {
			started <- err
			runtime.UnlockOSThread()
			return
		}
		started <- nil
		exited <- pm.Wait()
		runtime.UnlockOSThread()
	}()
	if err := <-started; err != nil {
		logFile.Close()
		return fail(fmt.Errorf("start postgres: %w", err))
	}
	logFile.Close() // the child holds its own descriptor

	dsn := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	stop := func() error {
		err := stopPostmaster(pm.Process, exited)
		if rerr := os.RemoveAll(dir); rerr != nil && err == nil {
			err = fmt.Errorf("remove cluster dir: %w", rerr)
		}
		return err
	}
	if err := waitReady(ctx, dsn, exited); err != nil {
		logTail := readTail(logPath, 4096)
		_ = stop()
		return nil, fmt.Errorf("%w\npostgres log:\n%s", err, logTail)
	}
	return &server{adminDSN: dsn, stop: stop}, nil
}

// stopPostmaster asks for a fast shutdown and kills the postmaster if it
// does not exit in time.
func stopPostmaster(p *os.Process, exited <-chan error) error {
	select {
	case <-exited:
		return nil // already gone
	default:
	}
	_ = p.Signal(syscall.SIGINT) // fast shutdown
	select {
	case <-exited:
		return nil
	case <-time.After(15 * time.Second):
	}
	_ = p.Signal(syscall.SIGQUIT)
	select {
	case <-exited:
		return nil
	case <-time.After(5 * time.Second):
	}
	_ = p.Kill()
	<-exited
	return errors.New("postgres did not shut down in time; killed")
}

func waitReady(ctx context.Context, dsn string, exited <-chan error) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var last error
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("postgres exited during startup: %v", err)
		default:
		}
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(cctx, dsn)
		if err == nil {
			err = conn.Ping(cctx)
			_ = conn.Close(cctx)
		}
		ccancel()
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("postgres not ready: %w", last)
		case err := <-exited:
			return fmt.Errorf("postgres exited during startup: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func readTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// alive reports whether a process with this pid exists.
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// reapStale stops and removes clusters left in the temp dir by test
// processes that died without cleaning up. A directory is stale when the
// pid in its owner file is dead (or, without an owner file, when it is
// older than a minute: another process may be creating it right now).
func reapStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			fi, serr := os.Stat(dir)
			if serr != nil || time.Since(fi.ModTime()) < time.Minute {
				continue
			}
		} else if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr != nil || alive(pid) {
			continue
		}
		killStalePostmaster(dir)
		_ = os.RemoveAll(dir)
	}
}

// killStalePostmaster stops the postmaster of a stale cluster, after
// checking that the pid really is a postgres serving that directory.
func killStalePostmaster(dir string) {
	b, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid"))
	if err != nil {
		return
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || !alive(pid) {
		return
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(cmdline, []byte(dir)) {
		return // pid reused by an unrelated process
	}
	_ = syscall.Kill(pid, syscall.SIGQUIT)
	for i := 0; i < 50 && alive(pid); i++ {
		time.Sleep(100 * time.Millisecond)
	}
	if alive(pid) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

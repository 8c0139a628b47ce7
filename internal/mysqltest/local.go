package mysqltest

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/esflow/esflow/pkg/eventstore/mysql"
)

const (
	dirPrefix = "esflow-mysqltest-"
	ownerFile = "owner.pid"
)

// searchDirs are looked in after PATH: the server binary lives in sbin,
// which is often not on a non-root user's PATH.
func searchDirs() []string {
	return []string{"/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin", "/usr/local/mysql/bin", "/usr/local/mysql/scripts"}
}

// findBinary returns the path of the first of names found on PATH or in
// dirs.
func findBinary(dirs []string, names ...string) (string, bool) {
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p, true
		}
	}
	for _, n := range names {
		for _, d := range dirs {
			p := filepath.Join(d, n)
			if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
				return p, true
			}
		}
	}
	return "", false
}

// serverArgs are the options both the bootstrap and the server get.
// --no-defaults must come first: no my.cnf of the machine applies.
func serverArgs(dir string) []string {
	args := []string{"--no-defaults", "--datadir=" + filepath.Join(dir, "data")}
	if os.Geteuid() == 0 {
		// mariadbd refuses to run as root unless told to; the data
		// directory is ours, so running as root is harmless here.
		args = append(args, "--user=root")
	}
	return args
}

// startLocal initialises and starts a throwaway server from binaries on
// PATH or in dirs.
func startLocal(ctx context.Context, dirs []string) (*Server, error) {
	server, ok := findBinary(dirs, "mariadbd", "mysqld")
	if !ok {
		return nil, &notAvailableError{reason: "no local MariaDB/MySQL server binary (mariadbd, mysqld); set " + ServerURLEnv + " or install mariadb-server"}
	}
	install, ok := findBinary(dirs, "mariadb-install-db", "mysql_install_db")
	if !ok {
		return nil, &notAvailableError{reason: "no mariadb-install-db / mysql_install_db next to " + server}
	}
	reapStale()

	dir, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("create server dir: %w", err)
	}
	fail := func(err error) (*Server, error) {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return fail(fmt.Errorf("write owner pid: %w", err))
	}
	// normal: root authenticates by (empty) password, over TCP too.
	bootstrap := exec.CommandContext(ctx, install, append(serverArgs(dir),
		"--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve")...)
	bootstrap.Dir = dir
	if out, err := bootstrap.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("%s: %w\n%s", filepath.Base(install), err, trimLog(out, 4096)))
	}

	port, err := freePort()
	if err != nil {
		return fail(err)
	}
	logPath := filepath.Join(dir, "server.log")
	sock := filepath.Join(dir, "mysqld.sock")
	cmd := exec.Command(server, append(serverArgs(dir),
		"--port="+strconv.Itoa(port),
		"--bind-address=127.0.0.1",
		"--socket="+sock,
		"--pid-file="+filepath.Join(dir, "mysqld.pid"),
		"--log-error="+logPath,
		"--tmpdir="+dir,
		"--skip-name-resolve",
		"--skip-log-bin",
		"--performance-schema=OFF",
		// Throwaway data: durability off for speed, as pgtest does
		// with fsync=off.
		"--innodb-flush-log-at-trx-commit=2",
		"--innodb-doublewrite=0",
		"--innodb-buffer-pool-size=128M",
		"--max-connections=500",
		"--character-set-server=utf8mb4",
		"--collation-server=utf8mb4_bin",
	)...)
	cmd.Dir = dir
	// If this process dies without stopping the server, the kernel sends
	// it SIGTERM (a clean shutdown). The signal is tied to the creating OS
	// thread, so the server is started from a goroutine that keeps its
	// thread locked until the server has exited.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	started := make(chan error, 1)
	exited := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		exited <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		return fail(fmt.Errorf("start %s: %w", filepath.Base(server), err))
	}
	stop := func() error {
		err := stopServer(cmd.Process, exited)
		if rerr := os.RemoveAll(dir); rerr != nil && err == nil {
			err = fmt.Errorf("remove server dir: %w", rerr)
		}
		return err
	}
	adminURL := fmt.Sprintf("mysql://root@127.0.0.1:%d/", port)
	if err := waitReady(ctx, adminURL, exited); err != nil {
		b, _ := os.ReadFile(logPath)
		_ = stop()
		return nil, fmt.Errorf("%w\nserver log:\n%s", err, trimLog(b, 4096))
	}
	return &Server{adminURL: adminURL, stop: stop}, nil
}

// stopServer asks for a clean shutdown and kills the server if it does
// not exit in time.
func stopServer(p *os.Process, exited <-chan error) error {
	select {
	case <-exited:
		return nil
	default:
	}
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		return nil
	case <-time.After(30 * time.Second):
	}
	_ = p.Kill()
	<-exited
	return errors.New("server did not shut down in time; killed")
}

func waitReady(ctx context.Context, adminURL string, exited <-chan error) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	db, err := mysql.OpenDB(adminURL)
	if err != nil {
		return err
	}
	defer db.Close()
	var last error
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("server exited during startup: %v", err)
		default:
		}
		if last = ping(ctx, db); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("server not ready: %w", last)
		case err := <-exited:
			return fmt.Errorf("server exited during startup: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func ping(ctx context.Context, db *sql.DB) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return db.PingContext(ctx)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// alive reports whether a process with this pid exists.
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// reapStale stops and removes servers left in the temp dir by test
// processes that died without cleaning up: a directory is stale when the
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
		killStaleServer(dir)
		_ = os.RemoveAll(dir)
	}
}

// killStaleServer stops the server of a stale directory, after checking
// that the pid really is a server started on that directory.
func killStaleServer(dir string) {
	b, err := os.ReadFile(filepath.Join(dir, "mysqld.pid"))
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || !alive(pid) {
		return
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(cmdline, []byte(dir)) {
		return // pid reused by an unrelated process
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; i < 100 && alive(pid); i++ {
		time.Sleep(100 * time.Millisecond)
	}
	if alive(pid) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

package suite

import (
	"context"
	"errors"
	"fmt"
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

// LocalPG is a PostgreSQL cluster of the suite's own, started from the
// installed binaries. Unlike internal/pgtest's shared cluster it can be
// restarted (fast shutdown, then start on the same port and data
// directory), which the PostgreSQL fault needs.
type LocalPG struct {
	bin, dir, data string
	port           int
	cred           *syscall.Credential
	exited         chan error // of the running postmaster
	proc           *os.Process
}

// ErrNoLocalPG means no initdb/postgres binaries were found.
var ErrNoLocalPG = errors.New("no local PostgreSQL binaries")

func pgBinDir() (string, error) {
	ok := func(dir string) bool {
		for _, b := range []string{"initdb", "postgres"} {
			if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.IsDir() {
				return false
			}
		}
		return true
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if d := strings.TrimSpace(string(out)); ok(d) {
			return d, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		a, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		b, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return a > b
	})
	for _, d := range dirs {
		if ok(d) {
			return d, nil
		}
	}
	return "", ErrNoLocalPG
}

// StartLocalPG initialises a cluster in a fresh directory and starts it.
func StartLocalPG(ctx context.Context) (*LocalPG, error) {
	bin, err := pgBinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "esflow-integration-pg-")
	if err != nil {
		return nil, fmt.Errorf("cluster dir: %w", err)
	}
	pg := &LocalPG{bin: bin, dir: dir, data: filepath.Join(dir, "data")}
	if os.Geteuid() == 0 { // initdb and postgres refuse to run as root
		u, err := user.Lookup("postgres")
		if err != nil {
			pg.remove()
			return nil, fmt.Errorf("running as root without a postgres OS user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		pg.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			pg.remove()
			return nil, fmt.Errorf("chown cluster dir: %w", err)
		}
	}
	initdb := pg.command(filepath.Join(bin, "initdb"), "-D", pg.data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C")
	if out, err := initdb.CombinedOutput(); err != nil {
		pg.remove()
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	if pg.port, err = freePort(); err != nil {
		pg.remove()
		return nil, err
	}
	if err := pg.start(ctx); err != nil {
		pg.remove()
		return nil, err
	}
	return pg, nil
}

func (pg *LocalPG) command(bin string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.Dir = pg.dir
	env := []string{"LC_ALL=C", "LANG=C"}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") && !strings.HasPrefix(kv, "LC_") && !strings.HasPrefix(kv, "LANG=") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: pg.cred}
	return cmd
}

// AdminURL is the connection string of the postgres database.
func (pg *LocalPG) AdminURL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", pg.port)
}

// start runs the postmaster and waits until it accepts connections.
// Durability settings stay at their defaults except fsync: a fast
// shutdown must not lose an acknowledged commit.
func (pg *LocalPG) start(ctx context.Context) error {
	logf, err := os.OpenFile(filepath.Join(pg.dir, "postgres.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o666)
	if err != nil {
		return fmt.Errorf("postgres log: %w", err)
	}
	defer logf.Close()
	cmd := pg.command(filepath.Join(pg.bin, "postgres"), "-D", pg.data, "-p", strconv.Itoa(pg.port),
		"-h", "127.0.0.1", "-k", pg.dir, "-c", "fsync=off", "-c", "max_connections=300", "-c", "logging_collector=off")
	cmd.Stdout, cmd.Stderr = logf, logf
	// Should the test process die, the kernel stops the postmaster. The
	// signal belongs to the creating thread, which therefore stays locked
	// until the postmaster exits.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
	started, exited := make(chan error, 1), make(chan error, 1)
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
		return fmt.Errorf("start postgres: %w", err)
	}
	pg.proc, pg.exited = cmd.Process, exited
	deadline := time.Now().Add(60 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(cctx, pg.AdminURL())
		if err == nil {
			err = conn.Ping(cctx)
			_ = conn.Close(cctx)
		}
		cancel()
		if err == nil {
			return nil
		}
		select {
		case werr := <-exited:
			return fmt.Errorf("postgres exited during start: %v\n%s", werr, pg.logTail())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres not ready: %w\n%s", err, pg.logTail())
		}
	}
}

// StopFast shuts the postmaster down with a fast shutdown (SIGINT: open
// transactions are rolled back, committed ones are kept).
func (pg *LocalPG) StopFast() error {
	if pg.proc == nil {
		return nil
	}
	_ = pg.proc.Signal(syscall.SIGINT)
	select {
	case <-pg.exited:
	case <-time.After(30 * time.Second):
		_ = pg.proc.Kill()
		<-pg.exited
		pg.proc = nil
		return errors.New("postgres: fast shutdown took over 30s; killed")
	}
	pg.proc = nil
	return nil
}

// Restart is StopFast followed by a start on the same port.
func (pg *LocalPG) Restart(ctx context.Context) (down time.Duration, err error) {
	t0 := time.Now()
	if err := pg.StopFast(); err != nil {
		return 0, err
	}
	if err := pg.start(ctx); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}

// Close stops the cluster and removes its directory.
func (pg *LocalPG) Close() error {
	err := pg.StopFast()
	pg.remove()
	return err
}

func (pg *LocalPG) remove() { _ = os.RemoveAll(pg.dir) }

func (pg *LocalPG) logTail() string {
	b, _ := os.ReadFile(filepath.Join(pg.dir, "postgres.log"))
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// CreateDatabases creates the named databases on the server at adminURL
// and returns their connection strings.
func CreateDatabases(ctx context.Context, adminURL string, names ...string) ([]string, error) {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return nil, fmt.Errorf("connect admin: %w", err)
	}
	defer conn.Close(ctx)
	var urls []string
	for _, n := range names {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{n}.Sanitize()); err != nil {
			return nil, fmt.Errorf("create database %s: %w", n, err)
		}
		cfg, err := pgx.ParseConfig(adminURL)
		if err != nil {
			return nil, err
		}
		urls = append(urls, fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", cfg.User, cfg.Host, cfg.Port, n))
	}
	return urls, nil
}

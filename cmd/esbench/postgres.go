package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/esflow/esflow/pkg/projection"
)

// pgServer is the PostgreSQL server the workloads create their databases
// on.
type pgServer struct {
	admin *url.URL // connection to an existing database, with rights to create others
	stop  func() error
}

// Close stops a cluster esbench started; a DATABASE_URL server is left
// alone.
func (s *pgServer) Close() error {
	if s.stop == nil {
		return nil
	}
	return s.stop()
}

// startPostgres returns DATABASE_URL's server, or starts a throwaway
// cluster with default settings.
func startPostgres(ctx context.Context, say func(string, ...any)) (*pgServer, error) {
	if dsn := os.Getenv("DATABASE_URL"); dsn != "" {
		u, err := url.Parse(dsn)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			return nil, fmt.Errorf("DATABASE_URL must be a postgres:// URL (esbench creates databases on that server)")
		}
		say("postgres: DATABASE_URL")
		return &pgServer{admin: u}, nil
	}
	say("postgres: starting a throwaway cluster (initdb, pg_ctl; default settings)")
	return startCluster(ctx)
}

// startCluster runs initdb and pg_ctl start on a free loopback port, as the
// postgres OS user when running as root (the server refuses root). Only
// the port, listen address and socket directory are set: durability and
// memory settings are PostgreSQL's defaults.
func startCluster(ctx context.Context) (*pgServer, error) {
	bin, err := pgBinDir()
	if err != nil {
		return nil, err
	}
	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "esbench-pg-")
	if err != nil {
		return nil, fmt.Errorf("cluster dir: %w", err)
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("chown cluster dir: %w", err)
		}
	}
	data := filepath.Join(dir, "data")
	command := func(name string, args ...string) *exec.Cmd {
		c := exec.CommandContext(ctx, filepath.Join(bin, name), args...)
		c.Dir = dir
		c.Env = []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C", "LANG=C"}
		if cred != nil {
			c.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		}
		return c
	}
	fail := func(err error) (*pgServer, error) {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	// --no-sync only skips flushing the new data directory once; the
	// server's own durability settings stay at their defaults.
	if out, err := command("initdb", "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync").CombinedOutput(); err != nil {
		return fail(fmt.Errorf("initdb: %w\n%s", err, out))
	}
	port, err := freePort()
	if err != nil {
		return fail(err)
	}
	logPath := filepath.Join(dir, "postgres.log")
	opts := fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -k %s", port, dir)
	if out, err := command("pg_ctl", "start", "-w", "-t", "60", "-D", data, "-l", logPath, "-o", opts).CombinedOutput(); err != nil {
		tail, _ := os.ReadFile(logPath)
		return fail(fmt.Errorf("pg_ctl start: %w\n%s\n%s", err, out, tail))
	}
	stop := func() error {
		c := exec.Command(filepath.Join(bin, "pg_ctl"), "stop", "-w", "-m", "fast", "-D", data)
		c.Dir = dir
		if cred != nil {
			c.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		}
		out, err := c.CombinedOutput()
		if err != nil {
			err = fmt.Errorf("pg_ctl stop: %w\n%s", err, out)
		}
		return errors.Join(err, os.RemoveAll(dir))
	}
	u := &url.URL{Scheme: "postgres", User: url.User("postgres"), Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Path: "/postgres", RawQuery: "sslmode=disable"}
	return &pgServer{admin: u, stop: stop}, nil
}

// pgBinDir finds a directory holding initdb and pg_ctl: pg_config's bindir,
// then the highest /usr/lib/postgresql/*/bin, then PATH.
func pgBinDir() (string, error) {
	has := func(dir string) bool {
		for _, b := range []string{"initdb", "pg_ctl", "postgres"} {
			if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.IsDir() {
				return false
			}
		}
		return true
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if dir := strings.TrimSpace(string(out)); has(dir) {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
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
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil && has(filepath.Dir(real)) {
			return filepath.Dir(real), nil
		}
	}
	return "", errors.New("no PostgreSQL binaries (initdb, pg_ctl) found; install PostgreSQL or set DATABASE_URL")
}

// serverCredential is the postgres OS user when running as root, nil
// otherwise.
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root and no postgres OS user to run the server as: %w", err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, fmt.Errorf("uid of postgres: %w", err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return nil, fmt.Errorf("gid of postgres: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// database is one database a workload created; Drop removes it.
type database struct {
	name string
	dsn  string // with pool_max_conns set
	srv  *pgServer
}

// newDatabase creates a fresh, empty database whose pools may open up to
// maxConns connections.
func (s *pgServer) newDatabase(ctx context.Context, name string, maxConns int) (*database, error) {
	if !projection.ValidIdentifier(name) {
		return nil, fmt.Errorf("invalid database name %q", name)
	}
	conn, err := pgx.Connect(ctx, s.admin.String())
	if err != nil {
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	defer conn.Close(ctx)
	q := projection.QuoteIdentifier(name)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+q); err != nil {
		return nil, fmt.Errorf("drop database %s: %w", name, err)
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+q); err != nil {
		return nil, fmt.Errorf("create database %s: %w", name, err)
	}
	u := *s.admin
	u.Path = "/" + name
	qs := u.Query()
	qs.Set("pool_max_conns", strconv.Itoa(max(maxConns, 4)))
	u.RawQuery = qs.Encode()
	return &database{name: name, dsn: u.String(), srv: s}, nil
}

// pool opens a pgx pool on the database.
func (d *database) pool(ctx context.Context) (*pgxpool.Pool, error) {
	p, err := pgxpool.New(ctx, d.dsn)
	if err != nil {
		return nil, fmt.Errorf("pool on %s: %w", d.name, err)
	}
	return p, nil
}

// Drop removes the database (connections still open are terminated).
func (d *database) Drop(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, d.srv.admin.String())
	if err != nil {
		return fmt.Errorf("connect to postgres: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+projection.QuoteIdentifier(d.name)+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", d.name, err)
	}
	return nil
}

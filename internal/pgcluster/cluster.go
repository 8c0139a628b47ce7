package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	defaultDirPrefix = "esflow-pg-"
	ownerFile        = "owner.pid"
	logFile          = "postgres.log"
)

// Options configure [Start]. The zero value is a cluster with
// PostgreSQL's default settings in a directory named esflow-pg-*.
type Options struct {
	// Settings are server settings, each "name=value", passed to postgres
	// as -c options in order. Empty keeps PostgreSQL's defaults (fsync on,
	// synchronous_commit on, ...). Port, listen address and socket
	// directory are always set by the cluster, and logging_collector is
	// off so that the server log goes to the cluster's postgres.log.
	Settings []string
	// DirPrefix is the name prefix of the cluster's temporary directory
	// (default "esflow-pg-"), which is also what [ReapStale] matches.
	DirPrefix string
}

// Cluster is a throwaway PostgreSQL cluster started by [Start]. Its
// methods are safe for concurrent use.
type Cluster struct {
	bin, dir, data string
	port           int
	settings       []string
	cred           *syscall.Credential

	mu     sync.Mutex
	proc   *os.Process // of the running postmaster; nil when stopped
	exited chan error  // receives the postmaster's exit
}

// Start initialises a cluster in a new temporary directory and starts it
// on a free loopback port, returning once it accepts connections. It
// returns an error wrapping [ErrNoBinaries] when no server binaries are
// installed.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}
	prefix := o.DirPrefix
	if prefix == "" {
		prefix = defaultDirPrefix
	}
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: create cluster dir: %w", err)
	}
	c := &Cluster{bin: bin, dir: dir, data: filepath.Join(dir, "data"), settings: o.Settings, cred: cred}
	fail := func(err error) (*Cluster, error) {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	// Written first, so ReapStale can tell an abandoned directory from one
	// being set up right now.
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return fail(fmt.Errorf("pgcluster: write owner pid: %w", err))
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return fail(fmt.Errorf("pgcluster: chown cluster dir: %w", err))
		}
	}
	// --no-sync only skips flushing the new data directory once; the
	// server's durability settings are those of Options.Settings.
	initdb := command(cred, dir, filepath.Join(bin, "initdb"),
		"-D", c.data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C")
	if out, err := initdb.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("pgcluster: initdb: %w\n%s", err, out))
	}
	if c.port, err = freePort(); err != nil {
		return fail(err)
	}
	if err := c.Start(ctx); err != nil {
		return fail(err)
	}
	return c, nil
}

// URL is the admin connection string: user postgres (trust
// authentication), database postgres, over TCP on 127.0.0.1.
func (c *Cluster) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.port)
}

// Port is the TCP port the cluster listens on, the same across restarts.
func (c *Cluster) Port() int { return c.port }

// BinDir is the directory of the server binaries the cluster runs.
func (c *Cluster) BinDir() string { return c.bin }

// Dir is the cluster's directory: the data directory "data", the server
// log "postgres.log" and the Unix socket.
func (c *Cluster) Dir() string { return c.dir }

// Start starts a stopped cluster again on the same port and data
// directory, returning once it accepts connections. It does nothing when
// the cluster is running.
func (c *Cluster) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc != nil {
		return nil
	}
	logf, err := os.OpenFile(filepath.Join(c.dir, logFile), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("pgcluster: open server log: %w", err)
	}
	defer logf.Close() // the child holds its own descriptor
	args := []string{"-D", c.data, "-p", strconv.Itoa(c.port), "-h", "127.0.0.1", "-k", c.dir,
		"-c", "logging_collector=off"}
	for _, s := range c.settings {
		args = append(args, "-c", s)
	}
	pm := command(c.cred, c.dir, filepath.Join(c.bin, "postgres"), args...)
	pm.Stdout, pm.Stderr = logf, logf
	// If this process dies without stopping the cluster, the kernel sends
	// the postmaster SIGQUIT (immediate shutdown). The signal is tied to
	// the creating OS thread, so the postmaster is started from a goroutine
	// that keeps its thread locked until the postmaster has exited.
	pm.SysProcAttr.Pdeathsig = syscall.SIGQUIT
	started, exited := make(chan error, 1), make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := pm.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		exited <- pm.Wait()
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("pgcluster: start postgres: %w", err)
	}
	c.proc, c.exited = pm.Process, exited
	if err := c.waitReady(ctx); err != nil {
		_ = c.stopLocked()
		return fmt.Errorf("%w\npostgres log:\n%s", err, c.logTail(4096))
	}
	return nil
}

// waitReady polls until the server accepts a connection, for up to a
// minute.
func (c *Cluster) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(cctx, c.URL())
		if err == nil {
			err = conn.Ping(cctx)
			_ = conn.Close(cctx)
		}
		ccancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgcluster: postgres not ready: %w", err)
		case werr := <-c.exited:
			c.exited <- werr // stopLocked waits on it too
			return fmt.Errorf("pgcluster: postgres exited during startup: %v", werr)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop shuts the server down with a fast shutdown (SIGINT: sessions are
// disconnected, open transactions rolled back, committed ones kept after
// a shutdown checkpoint). If it takes over 30 s, the server is sent
// SIGQUIT and then killed, and Stop reports it. Stopping a stopped
// cluster does nothing.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopLocked()
}

func (c *Cluster) stopLocked() error {
	p, exited := c.proc, c.exited
	if p == nil {
		return nil
	}
	c.proc, c.exited = nil, nil
	select {
	case <-exited:
		return nil // already gone
	default:
	}
	_ = p.Signal(syscall.SIGINT)
	select {
	case <-exited:
		return nil
	case <-time.After(30 * time.Second):
	}
	_ = p.Signal(syscall.SIGQUIT)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		_ = p.Kill()
		<-exited
	}
	return errors.New("pgcluster: postgres did not shut down within 30s; stopped it forcibly")
}

// Close stops the server and removes the cluster's directory.
func (c *Cluster) Close() error {
	err := c.Stop()
	if rerr := os.RemoveAll(c.dir); rerr != nil {
		err = errors.Join(err, fmt.Errorf("pgcluster: remove cluster dir: %w", rerr))
	}
	return err
}

// logTail is the last n bytes of the server log.
func (c *Cluster) logTail(n int) string {
	b, err := os.ReadFile(filepath.Join(c.dir, logFile))
	if err != nil {
		return ""
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgcluster: find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

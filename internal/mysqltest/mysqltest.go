// Package mysqltest gives each test a fresh, empty MariaDB (or MySQL)
// database.
//
// Usage:
//
//	func TestMain(m *testing.M) { os.Exit(mysqltest.Main(m)) }
//
//	func TestSomething(t *testing.T) {
//		url := mysqltest.NewDatabase(t) // mysql://root@127.0.0.1:port/esflow_t_…
//		…
//	}
//
// The server comes from, in order:
//
//  1. the ESFLOW_TEST_MYSQL_URL environment variable ([ServerURLEnv]): an
//     admin connection (mysql://user:pass@host:port/); every test
//     database is created on that server;
//  2. one throwaway server per test process, started lazily from the
//     local binaries (mariadb-install-db or mysql_install_db, then
//     mariadbd or mysqld, found on PATH or in /usr/sbin, /usr/bin,
//     /usr/local/mysql/bin) in a temporary directory, listening on a free
//     loopback port and on a socket in that directory. As root it runs
//     with --user=root.
//
// When neither is available the test is skipped, unless CI=true or
// ESFLOW_REQUIRE_MYSQL=1, in which case it fails.
//
// [Main] stops the server it started. A package whose TestMain belongs to
// another helper can use [Start] instead: the server then lives as long as
// one test. If the test process is killed, the server receives SIGTERM
// when its parent dies, and the next test process removes directories
// left behind by dead owners.
package mysqltest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esflow/esflow/pkg/eventstore/mysql"
)

// ServerURLEnv names the variable holding an existing server's admin URL.
const ServerURLEnv = "ESFLOW_TEST_MYSQL_URL"

// Server is a running MariaDB/MySQL server on which tests create
// databases.
type Server struct {
	adminURL string
	admin    *sql.DB
	stop     func() error // nil when nothing was started by us
	counter  atomic.Uint64
}

var (
	startOnce sync.Once
	shared    *Server
	sharedErr error
	runID     = randomHex(4)
)

// Main runs the tests and then stops the server it started, if any. Use it
// from TestMain: os.Exit(mysqltest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	startOnce.Do(func() { sharedErr = errors.New("mysqltest: already shut down") })
	if s := shared; s != nil {
		shared, sharedErr = nil, errors.New("mysqltest: already shut down")
		if err := s.close(); err != nil {
			fmt.Fprintf(os.Stderr, "mysqltest: shutdown: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// required reports whether a missing server must fail the test rather than
// skip it.
func required() bool {
	return os.Getenv("CI") == "true" || os.Getenv("ESFLOW_REQUIRE_MYSQL") == "1"
}

// skipOrFail ends t when no server could be had.
func skipOrFail(t testing.TB, err error) {
	t.Helper()
	var na *notAvailableError
	if errors.As(err, &na) && !required() {
		t.Skipf("no MariaDB/MySQL: %v", err)
	}
	t.Fatalf("mysqltest: %v", err)
}

// NewDatabase creates an empty database on the process's shared server
// (started on first use, stopped by [Main]) and returns its mysql:// URL.
// The database is dropped when the test ends. Safe for parallel tests.
func NewDatabase(t testing.TB) string {
	t.Helper()
	startOnce.Do(func() { shared, sharedErr = start() })
	if sharedErr != nil {
		skipOrFail(t, sharedErr)
	}
	return shared.NewDatabase(t)
}

// Start starts (or, with [ServerURLEnv], connects to) a server for one
// test; it is stopped when t ends. Use it where [Main] cannot be installed
// in TestMain.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := start()
	if err != nil {
		skipOrFail(t, err)
	}
	t.Cleanup(func() {
		if err := s.close(); err != nil {
			t.Errorf("mysqltest: stop: %v", err)
		}
	})
	return s
}

// URL returns the admin URL of the server (no database selected).
func (s *Server) URL() string { return s.adminURL }

// NewDatabase creates an empty database on s and returns its mysql://
// URL. The database is dropped when the test ends.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("esflow_t_%d_%s_%d", os.Getpid(), runID, s.counter.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// name is built from digits, hex and underscores only.
	if _, err := s.admin.ExecContext(ctx, "CREATE DATABASE `"+name+"` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"); err != nil {
		t.Fatalf("mysqltest: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := s.admin.ExecContext(ctx, "DROP DATABASE IF EXISTS `"+name+"`"); err != nil {
			t.Errorf("mysqltest: drop database %s: %v", name, err)
		}
	})
	u, err := withDatabase(s.adminURL, name)
	if err != nil {
		t.Fatalf("mysqltest: %v", err)
	}
	return u
}

func (s *Server) close() error {
	var errs []error
	if s.admin != nil {
		errs = append(errs, s.admin.Close())
	}
	if s.stop != nil {
		errs = append(errs, s.stop())
	}
	return errors.Join(errs...)
}

// notAvailableError means no server could be found or started for lack
// of binaries: the test is skipped rather than failed (unless required).
type notAvailableError struct{ reason string }

func (e *notAvailableError) Error() string { return e.reason }

// start picks the server source and connects the admin pool.
func start() (*Server, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s := &Server{}
	if u := os.Getenv(ServerURLEnv); u != "" {
		s.adminURL = u
	} else {
		local, err := startLocal(ctx, searchDirs())
		if err != nil {
			return nil, err
		}
		s = local
	}
	db, err := mysql.OpenDB(s.adminURL)
	if err != nil {
		_ = s.close()
		return nil, fmt.Errorf("admin connection %s: %w", s.adminURL, err)
	}
	db.SetMaxOpenConns(4)
	s.admin = db
	if err := db.PingContext(ctx); err != nil {
		_ = s.close()
		return nil, fmt.Errorf("connect admin: %w", err)
	}
	return s, nil
}

// withDatabase returns the URL pointing at database name instead.
func withDatabase(raw, name string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "mysql" {
		return "", fmt.Errorf("admin URL %q: want mysql://user:pass@host:port/", raw)
	}
	u.Path = "/" + name
	u.RawPath = ""
	return u.String(), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return fmt.Sprintf("%x", time.Now().UnixNano())
	}
	return hex.EncodeToString(b)
}

// trimLog shortens a server log for an error message.
func trimLog(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

// Package pgtest gives each test a fresh, empty PostgreSQL database.
//
// Usage:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
//	func TestSomething(t *testing.T) {
//		dsn := pgtest.NewDatabase(t) // postgres://… of a new database
//		…
//	}
//
// The server comes from, in order:
//
//  1. the DATABASE_URL environment variable (an admin connection; every
//     test database is created on that server);
//  2. one throwaway cluster per test process, started lazily from local
//     PostgreSQL binaries (initdb, postgres) found through pg_config, PATH
//     or /usr/lib/postgresql/*/bin; as root it runs as the "postgres" OS
//     user;
//  3. a container started with testcontainers-go when a Docker engine
//     answers.
//
// When none is available the test is skipped, unless CI=true or
// ESFLOW_REQUIRE_POSTGRES=1, in which case it fails.
//
// [Main] stops whatever was started. If the test process is killed before
// that, the local cluster still goes away: the postmaster receives a
// signal when its parent dies, and the next test process removes
// directories left behind by dead owners.
package pgtest

import (
	"context"
	"crypto/rand"
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

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/esflow/esflow/internal/pgcluster"
)

// server is a running PostgreSQL reachable through adminDSN.
type server struct {
	adminDSN string
	admin    *pgxpool.Pool
	stop     func() error // nil when nothing was started by us
}

var (
	startOnce sync.Once
	srv       *server
	srvErr    error
	dbCounter atomic.Uint64
	runID     = randomHex(4)
)

// Main runs the tests and then stops the server it started, if any. Use it
// from TestMain: os.Exit(pgtest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	if err := shutdown(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: shutdown: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// shutdown stops the server if one was started. It is safe to call when
// nothing was started.
func shutdown() error {
	// Make later NewDatabase calls fail cleanly instead of starting anew.
	startOnce.Do(func() { srvErr = errors.New("pgtest: already shut down") })
	if srv == nil {
		return nil
	}
	s := srv
	srv = nil
	srvErr = errors.New("pgtest: already shut down")
	if s.admin != nil {
		s.admin.Close()
	}
	if s.stop != nil {
		return s.stop()
	}
	return nil
}

// required reports whether a missing server must fail the test rather than
// skip it.
func required() bool {
	return os.Getenv("CI") == "true" || os.Getenv("ESFLOW_REQUIRE_POSTGRES") == "1"
}

// NewDatabase creates an empty database for this test and returns its
// connection string. The database is dropped (WITH (FORCE)) when the test
// ends. Safe for parallel tests.
func NewDatabase(t testing.TB) string {
	t.Helper()
	startOnce.Do(func() { srv, srvErr = start() })
	if srvErr != nil {
		var na *notAvailableError
		if errors.As(srvErr, &na) && !required() {
			t.Skipf("no PostgreSQL: %v", srvErr)
		}
		t.Fatalf("pgtest: %v", srvErr)
	}
	s := srv
	name := fmt.Sprintf("esflow_t_%d_%s_%d", os.Getpid(), runID, dbCounter.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// A logical replication slot (the WAL-mode outbox's) keeps its
		// database from being dropped, even WITH (FORCE).
		if err := dropSlots(ctx, s.admin, name); err != nil {
			t.Errorf("pgtest: drop replication slots of %s: %v", name, err)
		}
		if _, err := s.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	dsn, err := withDatabase(s.adminDSN, name)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return dsn
}

// notAvailableError means no way to get a server was found: the test is
// skipped rather than failed (unless required).
type notAvailableError struct{ reasons []string }

func (e *notAvailableError) Error() string { return strings.Join(e.reasons, "; ") }

// ServerURLEnv names a variable that, when set, takes precedence over
// DATABASE_URL as the admin connection. Test packages whose code under
// test reads DATABASE_URL itself move the value there in TestMain.
const ServerURLEnv = "ESFLOW_TEST_DATABASE_URL"

func serverURL() string {
	if dsn := os.Getenv(ServerURLEnv); dsn != "" {
		return dsn
	}
	return os.Getenv("DATABASE_URL")
}

// start picks the server source and connects the admin pool.
func start() (*server, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var s *server
	if dsn := serverURL(); dsn != "" {
		s = &server{adminDSN: dsn}
	} else {
		var reasons []string
		local, err := startLocal(ctx)
		switch {
		case err == nil:
			s = local
		case errors.Is(err, pgcluster.ErrNoBinaries):
			reasons = append(reasons, err.Error())
			docker, derr := startDocker(ctx)
			if derr != nil {
				if errors.Is(derr, errNoDocker) {
					return nil, &notAvailableError{reasons: append(reasons, derr.Error())}
				}
				return nil, derr
			}
			s = docker
		default:
			return nil, err
		}
	}
	cfg, err := pgxpool.ParseConfig(s.adminDSN)
	if err != nil {
		s.stopQuietly()
		return nil, fmt.Errorf("parse admin connection string: %w", err)
	}
	cfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err == nil {
		err = pool.Ping(ctx)
	}
	if err != nil {
		if pool != nil {
			pool.Close()
		}
		s.stopQuietly()
		return nil, fmt.Errorf("connect admin: %w", err)
	}
	s.admin = pool
	return s, nil
}

func (s *server) stopQuietly() {
	if s.stop != nil {
		_ = s.stop()
	}
}

// withDatabase returns dsn pointing at database name instead.
func withDatabase(dsn, name string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", fmt.Errorf("parse connection URL: %w", err)
		}
		u.Path = "/" + name
		u.RawPath = ""
		return u.String(), nil
	}
	// keyword=value form: a later dbname overrides an earlier one.
	return dsn + " dbname=" + name, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return fmt.Sprintf("%x", time.Now().UnixNano())
	}
	return hex.EncodeToString(b)
}

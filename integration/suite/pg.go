package suite

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/esflow/esflow/internal/pgcluster"
)

// LocalPG is a PostgreSQL cluster of the suite's own, started from the
// installed binaries. Unlike internal/pgtest's shared cluster it can be
// restarted (fast shutdown, then start on the same port and data
// directory), which the PostgreSQL fault needs.
type LocalPG struct {
	*pgcluster.Cluster
	bin string
}

// ErrNoLocalPG means no initdb/postgres binaries were found.
var ErrNoLocalPG = pgcluster.ErrNoBinaries

// localPGSettings keep PostgreSQL's default durability except fsync:
// synchronous_commit stays on, so an acknowledged commit is in the WAL
// the server wrote, and a fast shutdown (the restart fault) does not
// crash the machine, so the page cache still holds what fsync would have
// flushed. max_connections covers every process of the pipeline.
var localPGSettings = []string{"fsync=off", "max_connections=300",
	// The WAL outbox mode decodes a replication slot.
	"wal_level=logical", "max_replication_slots=16", "max_wal_senders=16"}

// StartLocalPG initialises a cluster in a fresh directory and starts it.
func StartLocalPG(ctx context.Context) (*LocalPG, error) {
	c, err := pgcluster.Start(ctx, pgcluster.Options{Settings: localPGSettings, DirPrefix: "esflow-integration-pg-"})
	if err != nil {
		return nil, err
	}
	return &LocalPG{Cluster: c, bin: c.BinDir()}, nil
}

// AdminURL is the connection string of the postgres database.
func (pg *LocalPG) AdminURL() string { return pg.URL() }

// Restart stops the server with a fast shutdown (open transactions are
// rolled back, committed ones kept) and starts it again on the same port
// and data directory; it returns how long the server was away.
func (pg *LocalPG) Restart(ctx context.Context) (down time.Duration, err error) {
	t0 := time.Now()
	if err := pg.Stop(); err != nil {
		return 0, err
	}
	if err := pg.Start(ctx); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
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

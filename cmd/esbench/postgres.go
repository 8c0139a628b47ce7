package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/esflow/esflow/internal/pgcluster"
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
// cluster with PostgreSQL's default settings: only the port, listen
// address and socket directory are set, so durability (fsync,
// synchronous_commit, full_page_writes) and memory settings are those a
// fresh installation has, and the report's settings line shows them.
func startPostgres(ctx context.Context, say func(string, ...any)) (*pgServer, error) {
	if dsn := os.Getenv("DATABASE_URL"); dsn != "" {
		u, err := url.Parse(dsn)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			return nil, fmt.Errorf("DATABASE_URL must be a postgres:// URL (esbench creates databases on that server)")
		}
		say("postgres: DATABASE_URL")
		return &pgServer{admin: u}, nil
	}
	say("postgres: starting a throwaway cluster (initdb, postgres; default settings but wal_level=logical)")
	// wal_level=logical, the one change from the defaults: W1-W3 run the
	// WAL outbox mode (a replication slot) beside the table mode, and both
	// modes run on the same server settings.
	c, err := pgcluster.Start(ctx, pgcluster.Options{DirPrefix: "esbench-pg-", Settings: []string{"wal_level=logical"}})
	if errors.Is(err, pgcluster.ErrNoBinaries) {
		return nil, fmt.Errorf("%w; install PostgreSQL or set DATABASE_URL", err)
	}
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(c.URL())
	if err != nil {
		return nil, errors.Join(fmt.Errorf("cluster URL: %w", err), c.Close())
	}
	return &pgServer{admin: u, stop: c.Close}, nil
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
	// A WAL-mode workload's replication slot keeps the database from
	// being dropped (even WITH (FORCE)), and would keep its WAL for the
	// rest of the run.
	for attempt := 0; ; attempt++ {
		_, err := conn.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL`, d.name)
		if err == nil {
			_, err = conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1`, d.name)
		}
		if err == nil {
			break
		}
		if attempt == 50 {
			return fmt.Errorf("drop replication slots of %s: %w", d.name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+projection.QuoteIdentifier(d.name)+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", d.name, err)
	}
	return nil
}

// checkpoint writes the server's dirty buffers out now, so that the WAL an
// earlier workload wrote is not flushed in the middle of the next one (W1
// alone writes gigabytes; a checkpoint it triggers would land in W2 or
// W3). It needs superuser or pg_checkpoint rights; without them the
// workloads run without it and the reason is said.
func (s *pgServer) checkpoint(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, s.admin.String())
	if err != nil {
		return fmt.Errorf("connect to postgres: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}

// logical reports whether the server runs wal_level=logical (the WAL
// outbox mode's W1-W3 runs need it).
func (s *pgServer) logical(ctx context.Context) (bool, error) {
	conn, err := pgx.Connect(ctx, s.admin.String())
	if err != nil {
		return false, fmt.Errorf("connect to postgres: %w", err)
	}
	defer conn.Close(ctx)
	var level string
	if err := conn.QueryRow(ctx, `SHOW wal_level`).Scan(&level); err != nil {
		return false, fmt.Errorf("wal_level: %w", err)
	}
	return level == "logical", nil
}

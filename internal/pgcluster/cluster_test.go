package pgcluster_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/esflow/esflow/internal/pgcluster"
)

// start starts a cluster, skipping the test when no binaries are
// installed, unless CI=true.
func start(t *testing.T, o pgcluster.Options) *pgcluster.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, o)
	if errors.Is(err, pgcluster.ErrNoBinaries) && os.Getenv("CI") != "true" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func query(t *testing.T, url, sql string, args ...any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	var s string
	if err := conn.QueryRow(ctx, sql, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

// TestStopStartClose checks that a cluster restarted after a fast
// shutdown listens on the same port and keeps committed data, and that
// Close removes its directory.
func TestStopStartClose(t *testing.T) {
	c := start(t, pgcluster.Options{Settings: []string{"max_connections=50"}})
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = c.Close()
		}
	})
	if got := query(t, c.URL(), "SHOW max_connections"); got != "50" {
		t.Errorf("max_connections = %s, want 50 (from Options.Settings)", got)
	}
	if got := query(t, c.URL(), "SHOW fsync"); got != "on" {
		t.Errorf("fsync = %s, want the default on", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.URL())
	if err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(ctx, "CREATE TABLE kept AS SELECT 'committed'::text AS v")
	_ = conn.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	url, port := c.URL(), c.Port()

	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), time.Second)
	if conn, err := pgx.Connect(ctx, url); err == nil {
		_ = conn.Close(ctx)
		t.Error("connected to a stopped cluster")
	}
	cancel()

	ctx, cancel = context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatalf("Start again: %v", err)
	}
	if c.Port() != port || c.URL() != url {
		t.Errorf("restarted on %s, want %s", c.URL(), url)
	}
	if got := query(t, c.URL(), "SELECT v FROM kept"); got != "committed" {
		t.Errorf("after restart: %q, want the committed row", got)
	}

	dir := c.Dir()
	closed = true
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cluster dir after Close: %v, want it removed", err)
	}
}

// TestReapStale checks that a cluster directory whose owner died is
// removed and one whose owner lives is kept.
func TestReapStale(t *testing.T) {
	prefix := "esflow-pgcluster-reaptest-" + strconv.Itoa(os.Getpid()) + "-"
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Skipf("no process to take a dead pid from: %v", err)
	}
	mk := func(owner int) string {
		dir, err := os.MkdirTemp("", prefix)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.RemoveAll(dir) })
		if err := os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(strconv.Itoa(owner)), 0o644); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	stale, live := mk(dead.Process.Pid), mk(os.Getpid())
	pgcluster.ReapStale(prefix)
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dir of a dead owner: %v, want it removed", err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("dir of a live owner: %v, want it kept", err)
	}
}

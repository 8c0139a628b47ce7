package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/jackc/pgx/v5"
)

// machine describes where a run happened.
type machine struct {
	cores      int
	cpu        string
	kernel     string
	goVersion  string
	pgVersion  string
	pgSettings string // the durability settings in force
	kafka      string
}

func describeMachine(ctx context.Context, pg *pgServer) (machine, error) {
	m := machine{cores: runtime.NumCPU(), cpu: cpuModel(), goVersion: runtime.Version(), kafka: "embedded broker (pkg/broker, kfake) in its own process"}
	if os.Getenv("KAFKA_BROKERS") != "" {
		m.kafka = "KAFKA_BROKERS"
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = "Linux " + strings.TrimSpace(string(b))
	}
	conn, err := pgx.Connect(ctx, pg.admin.String())
	if err != nil {
		return m, fmt.Errorf("connect to postgres: %w", err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&m.pgVersion); err != nil {
		return m, fmt.Errorf("server version: %w", err)
	}
	var parts []string
	for _, s := range []string{"fsync", "synchronous_commit", "full_page_writes", "wal_level", "shared_buffers"} {
		var v string
		if err := conn.QueryRow(ctx, "SELECT current_setting($1)", s).Scan(&v); err != nil {
			return m, fmt.Errorf("setting %s: %w", s, err)
		}
		parts = append(parts, s+"="+v)
	}
	m.pgSettings = strings.Join(parts, ", ")
	return m, nil
}

// cpuModel is the first "model name" of /proc/cpuinfo.
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func (m machine) summary() string {
	return fmt.Sprintf("%d cores, %s; %s; PostgreSQL %s", m.cores, m.cpu, m.goVersion, m.pgVersion)
}

func (m machine) lines() []string {
	return []string{
		fmt.Sprintf("Machine: %d cores (%s), %s, GOMAXPROCS %d", m.cores, m.cpu, m.kernel, runtime.GOMAXPROCS(0)),
		fmt.Sprintf("Go: %s", m.goVersion),
		fmt.Sprintf("PostgreSQL: %s (%s)", m.pgVersion, m.pgSettings),
		fmt.Sprintf("Kafka: %s", m.kafka),
	}
}

package sqlite

import (
	"github.com/esflow/esflow/internal/migrate"

	"context"
	"embed"
	"fmt"
	"strings"

	"github.com/esflow/esflow/pkg/eventstore"
)

// MigrationsTable records which migrations have been applied to which
// events table: one row per (table_name, version).
const MigrationsTable = "esflow_schema_migrations"

//go:embed migrations/*.sql
var migrationFiles embed.FS

// names are the template fields: validated identifiers, already quoted.
type names struct {
	Table, SnapshotTable, TopicIndex string
	StreamID, Position, Topic, Data  string
}

func quotedNames(s eventstore.Schema) names {
	q := eventstore.Quote
	return names{
		Table:         q(s.Table),
		SnapshotTable: q(s.SnapshotTable),
		// Table is at most 48 bytes, so the suffixed name stays a plain
		// identifier.
		TopicIndex: q(s.Table + "_topic_idx"),
		StreamID:   q(s.StreamIDColumn),
		Position:   q(s.PositionColumn),
		Topic:      q(s.TopicColumn),
		Data:       q(s.DataColumn),
	}
}

// loadMigrations parses the embedded templates, ordered by the version
// number that prefixes each file name ("0001_create_events.sql").
func loadMigrations() ([]migrate.Migration, error) {
	return migrate.Load(migrationFiles, "migrations")
}

// Migrate creates or upgrades the Store's tables. It is idempotent: each
// embedded migrate.Migration runs at most once per events table, as recorded in
// [MigrationsTable], and all pending ones run in one write transaction,
// so concurrent Migrate calls (even from other processes) are safe.
func (s *Store) Migrate(ctx context.Context) error {
	const op = "migrate"
	if err := s.usable(ctx, op); err != nil {
		return err
	}
	migrations, err := loadMigrations()
	if err != nil {
		return &eventstore.Error{Op: op, Err: err}
	}
	n := quotedNames(s.schema)

	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return &eventstore.Error{Op: op, Err: fmt.Errorf("begin: %w", err)}
	}
	defer func() { _ = tx.Rollback() }()

	mt := eventstore.Quote(MigrationsTable)
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+mt+` (
    table_name TEXT NOT NULL,
    version INTEGER NOT NULL,
    applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (table_name, version)
)`); err != nil {
		return &eventstore.Error{Op: op, Err: fmt.Errorf("create %s: %w", MigrationsTable, err)}
	}

	applied := map[int]bool{}
	rows, err := tx.QueryContext(ctx, `SELECT version FROM `+mt+` WHERE table_name = ?`, s.schema.Table)
	if err != nil {
		return &eventstore.Error{Op: op, Err: fmt.Errorf("read applied versions: %w", err)}
	}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			_ = rows.Close()
			return &eventstore.Error{Op: op, Err: fmt.Errorf("read applied versions: %w", err)}
		}
		applied[v] = true
	}
	if err := rows.Close(); err != nil {
		return &eventstore.Error{Op: op, Err: fmt.Errorf("read applied versions: %w", err)}
	}
	if err := rows.Err(); err != nil {
		return &eventstore.Error{Op: op, Err: fmt.Errorf("read applied versions: %w", err)}
	}

	for _, m := range migrations {
		if applied[m.Version] {
			continue
		}
		var b strings.Builder
		if err := m.Template.Execute(&b, n); err != nil {
			return &eventstore.Error{Op: op, Err: fmt.Errorf("migrate.Migration %s: %w", m.Name, err)}
		}
		if _, err := tx.ExecContext(ctx, b.String()); err != nil {
			return &eventstore.Error{Op: op, Err: fmt.Errorf("migrate.Migration %s: %w", m.Name, err)}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO `+mt+` (table_name, version) VALUES (?, ?)`, s.schema.Table, m.Version); err != nil {
			return &eventstore.Error{Op: op, Err: fmt.Errorf("record migrate.Migration %s: %w", m.Name, err)}
		}
	}
	if err := tx.Commit(); err != nil {
		return &eventstore.Error{Op: op, Err: fmt.Errorf("commit: %w", err)}
	}
	return nil
}

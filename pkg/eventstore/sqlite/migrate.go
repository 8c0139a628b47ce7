package sqlite

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
	"text/template"

	"github.com/esflow/esflow/pkg/eventstore"
)

// MigrationsTable records which migrations have been applied to which
// events table: one row per (table_name, version).
const MigrationsTable = "esflow_schema_migrations"

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one embedded, versioned SQL template.
type migration struct {
	version int
	name    string
	tmpl    *template.Template
}

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
func loadMigrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("read embedded migrations: %w", err)
	}
	var out []migration
	for _, e := range entries {
		name := e.Name()
		prefix, _, ok := strings.Cut(name, "_")
		if !ok {
			return nil, fmt.Errorf("migration %s: name must be <version>_<title>.sql", name)
		}
		v, err := strconv.Atoi(prefix)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: bad version %q", name, prefix)
		}
		text, err := migrationFiles.ReadFile(path.Join("migrations", name))
		if err != nil {
			return nil, fmt.Errorf("migration %s: %w", name, err)
		}
		t, err := template.New(name).Option("missingkey=error").Parse(string(text))
		if err != nil {
			return nil, fmt.Errorf("migration %s: %w", name, err)
		}
		out = append(out, migration{version: v, name: name, tmpl: t})
	}
	slices.SortFunc(out, func(a, b migration) int { return a.version - b.version })
	for i := 1; i < len(out); i++ {
		if out[i].version == out[i-1].version {
			return nil, fmt.Errorf("migrations %s and %s share version %d", out[i-1].name, out[i].name, out[i].version)
		}
	}
	return out, nil
}

// Migrate creates or upgrades the Store's tables. It is idempotent: each
// embedded migration runs at most once per events table, as recorded in
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
		if applied[m.version] {
			continue
		}
		var b strings.Builder
		if err := m.tmpl.Execute(&b, n); err != nil {
			return &eventstore.Error{Op: op, Err: fmt.Errorf("migration %s: %w", m.name, err)}
		}
		if _, err := tx.ExecContext(ctx, b.String()); err != nil {
			return &eventstore.Error{Op: op, Err: fmt.Errorf("migration %s: %w", m.name, err)}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO `+mt+` (table_name, version) VALUES (?, ?)`, s.schema.Table, m.version); err != nil {
			return &eventstore.Error{Op: op, Err: fmt.Errorf("record migration %s: %w", m.name, err)}
		}
	}
	if err := tx.Commit(); err != nil {
		return &eventstore.Error{Op: op, Err: fmt.Errorf("commit: %w", err)}
	}
	return nil
}

package projection

import (
	"context"
	"embed"
	"fmt"
	"strings"

	"github.com/esflow/esflow/internal/migrate"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// schemaNames fills the migration templates: the column types that
// differ between the dialects.
type schemaNames struct{ ID, TS string }

func namesFor(d Dialect) schemaNames {
	if d == Postgres {
		return schemaNames{ID: "uuid", TS: "timestamptz"}
	}
	return schemaNames{ID: "TEXT", TS: "TEXT"}
}

// setupSchema applies the bookkeeping migrations not yet recorded in
// MigrationsTable and creates the projection's own tables, in one
// transaction. On PostgreSQL a transaction-scoped advisory lock
// serialises concurrent setups: CREATE TABLE IF NOT EXISTS racing itself
// can fail with a unique violation in the catalog.
func setupSchema(ctx context.Context, db DB, p Projection, t Tables) error {
	ms, err := migrate.Load(migrationFiles, "migrations")
	if err != nil {
		return fmt.Errorf("projection: %w", err)
	}
	return db.InTx(ctx, func(tx Tx) error {
		if db.Dialect() == Postgres {
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(7358210947710452)`); err != nil {
				return fmt.Errorf("projection: setup lock: %w", err)
			}
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+MigrationsTable+` (
	version INTEGER NOT NULL PRIMARY KEY,
	applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
)`); err != nil {
			return fmt.Errorf("projection: create %s: %w", MigrationsTable, err)
		}
		done := map[int]bool{}
		rows, err := tx.Query(ctx, `SELECT version FROM `+MigrationsTable)
		if err != nil {
			return fmt.Errorf("projection: read applied migrations: %w", err)
		}
		for rows.Next() {
			var v int
			if err := rows.Scan(&v); err != nil {
				rows.Close()
				return fmt.Errorf("projection: read applied migrations: %w", err)
			}
			done[v] = true
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return fmt.Errorf("projection: read applied migrations: %w", err)
		}
		for _, m := range ms {
			if done[m.Version] {
				continue
			}
			var sql strings.Builder
			if err := m.Template.Execute(&sql, namesFor(db.Dialect())); err != nil {
				return fmt.Errorf("projection: render migration %s: %w", m.Name, err)
			}
			for _, stmt := range splitStatements(sql.String()) {
				if _, err := tx.Exec(ctx, stmt); err != nil {
					return fmt.Errorf("projection: apply migration %s: %w", m.Name, err)
				}
			}
			if _, err := tx.Exec(ctx, `INSERT INTO `+MigrationsTable+` (version) VALUES ($1)`, m.Version); err != nil {
				return fmt.Errorf("projection: record migration %s: %w", m.Name, err)
			}
		}
		if err := p.Setup(ctx, tx, t); err != nil {
			return fmt.Errorf("projection %s: setup: %w", p.Name(), err)
		}
		return nil
	})
}

// splitStatements cuts a migration into its statements (one per
// Exec, which SQLite's driver needs), dropping comment-only pieces. The
// migrations end each statement with ";" at the end of a line.
func splitStatements(sql string) []string {
	var out []string
	for _, s := range strings.Split(sql, ";\n") {
		code := false
		for _, line := range strings.Split(s, "\n") {
			if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "--") {
				code = true
			}
		}
		if code {
			out = append(out, strings.TrimSpace(s))
		}
	}
	return out
}

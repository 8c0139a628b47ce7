package projection

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// Table names of the runner's bookkeeping, shared by all projections
// (the projection column tells them apart).
const (
	TrackingTable    = "esflow_projection_tracking"
	GapsTable        = "esflow_projection_gaps"
	DeadLettersTable = "esflow_projection_dead_letters"
)

// errConcurrentApply means the tracking upsert found a row already at or
// past the version this transaction applied: another consumer (a
// rebalance overlap) applied it first. The batch is rolled back and
// retried; the retry sees the new tracking and skips the duplicates.
var errConcurrentApply = errors.New("projection: tracking changed concurrently")

func schemaStatements(d Dialect) []string {
	id, ts := "TEXT", "TEXT"
	if d == Postgres {
		id, ts = "uuid", "timestamptz"
	}
	return []string{
		`CREATE TABLE IF NOT EXISTS ` + TrackingTable + ` (
	projection   TEXT NOT NULL,
	aggregate_id ` + id + ` NOT NULL,
	version      BIGINT NOT NULL,
	event_id     ` + id + ` NOT NULL,
	updated_at   ` + ts + ` NOT NULL DEFAULT CURRENT_TIMESTAMP,
	PRIMARY KEY (projection, aggregate_id)
)`,
		// One row per aggregate with a gap: the newest version seen while an
		// earlier one was missing. It is unresolved while tracking is
		// below seen_version (see UnresolvedGaps), so resolving needs no
		// write on the hot path.
		`CREATE TABLE IF NOT EXISTS ` + GapsTable + ` (
	projection       TEXT NOT NULL,
	aggregate_id     ` + id + ` NOT NULL,
	expected_version BIGINT NOT NULL,
	seen_version     BIGINT NOT NULL,
	event_id         ` + id + ` NOT NULL,
	topic            TEXT NOT NULL,
	kafka_partition  INTEGER NOT NULL,
	kafka_offset     BIGINT NOT NULL,
	detected_at      ` + ts + ` NOT NULL DEFAULT CURRENT_TIMESTAMP,
	PRIMARY KEY (projection, aggregate_id)
)`,
		`CREATE TABLE IF NOT EXISTS ` + DeadLettersTable + ` (
	projection       TEXT NOT NULL,
	event_id         ` + id + ` NOT NULL,
	aggregate_id     ` + id + ` NOT NULL,
	version          BIGINT NOT NULL,
	error            TEXT NOT NULL,
	topic            TEXT NOT NULL,
	kafka_partition  INTEGER NOT NULL,
	kafka_offset     BIGINT NOT NULL,
	dead_lettered_at ` + ts + ` NOT NULL DEFAULT CURRENT_TIMESTAMP,
	redriven_at      ` + ts + `,
	PRIMARY KEY (projection, event_id)
)`,
	}
}

// setupSchema creates the bookkeeping tables and the projection's own.
// On PostgreSQL a transaction-scoped advisory lock serialises concurrent
// setups: CREATE TABLE IF NOT EXISTS racing itself can fail with a
// unique violation in the catalog.
func setupSchema(ctx context.Context, db DB, p Projection, t Tables) error {
	return db.InTx(ctx, func(tx Tx) error {
		if db.Dialect() == Postgres {
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(7358210947710452)`); err != nil {
				return fmt.Errorf("projection: setup lock: %w", err)
			}
		}
		for _, s := range schemaStatements(db.Dialect()) {
			if _, err := tx.Exec(ctx, s); err != nil {
				return fmt.Errorf("projection: create bookkeeping tables: %w", err)
			}
		}
		if err := p.Setup(ctx, tx, t); err != nil {
			return fmt.Errorf("projection %s: setup: %w", p.Name(), err)
		}
		return nil
	})
}

// maxRowsPerStatement keeps multi-row statements under SQLite's and
// PostgreSQL's parameter limits (32766 and 65535) at 4 columns.
const maxRowsPerStatement = 1000

// loadVersions returns the last applied version of each listed aggregate
// that has one.
func loadVersions(ctx context.Context, tx Tx, projection string, ids []string) (map[string]uint64, error) {
	out := make(map[string]uint64, len(ids))
	if tx.Dialect() == Postgres {
		return out, loadVersionsPG(ctx, tx, projection, ids, out)
	}
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), maxRowsPerStatement)]
		ids = ids[len(chunk):]
		args := make([]any, 0, len(chunk)+1)
		args = append(args, projection)
		var in strings.Builder
		for i, id := range chunk {
			if i > 0 {
				in.WriteByte(',')
			}
			fmt.Fprintf(&in, "$%d", i+2)
			args = append(args, id)
		}
		rows, err := tx.Query(ctx, `SELECT aggregate_id, version FROM `+TrackingTable+
			` WHERE projection = $1 AND aggregate_id IN (`+in.String()+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("projection: read tracking: %w", err)
		}
		for rows.Next() {
			var id string
			var v int64
			if err := rows.Scan(&id, &v); err != nil {
				rows.Close()
				return nil, fmt.Errorf("projection: read tracking: %w", err)
			}
			out[strings.ToLower(id)] = uint64(v)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("projection: read tracking: %w", err)
		}
	}
	return out, nil
}

// loadVersionsPG is loadVersions in one statement text whatever the
// number of ids (an IN list of a new length is a new statement for pgx's
// cache: a prepare round trip and a fresh plan), probing the primary key
// once per id. The LIMIT keeps the planner from flattening the probe into
// a join: with `aggregate_id = ANY(…)`, or a join, it chose from stale
// statistics (a tracking table that grew since it was last analysed) to
// scan every row of the projection and filter — 10,000 rows read for 60
// wanted, a cost that grows with the table.
func loadVersionsPG(ctx context.Context, tx Tx, projection string, ids []string, out map[string]uint64) error {
	rows, err := tx.Query(ctx, `SELECT u.id::text, t.version FROM unnest($2::uuid[]) AS u(id)
CROSS JOIN LATERAL (SELECT version FROM `+TrackingTable+` WHERE projection = $1 AND aggregate_id = u.id LIMIT 1) t`,
		projection, ids)
	if err != nil {
		return fmt.Errorf("projection: read tracking: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var v int64
		if err := rows.Scan(&id, &v); err != nil {
			return fmt.Errorf("projection: read tracking: %w", err)
		}
		out[id] = uint64(v)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("projection: read tracking: %w", err)
	}
	return nil
}

type trackingRow struct {
	aggregateID string
	version     uint64
	eventID     string
}

// writeTracking moves each aggregate's tracking to its new version. The
// conditional upsert only moves forward; a row that did not move means a
// concurrent apply, reported as errConcurrentApply.
func writeTracking(ctx context.Context, tx Tx, projection string, rows []trackingRow) error {
	for len(rows) > 0 {
		chunk := rows[:min(len(rows), maxRowsPerStatement)]
		rows = rows[len(chunk):]
		sql, args := trackingUpsert(projection, chunk)
		n, err := tx.Exec(ctx, sql, args...)
		if err != nil {
			return fmt.Errorf("projection: write tracking: %w", err)
		}
		if n != int64(len(chunk)) {
			return errConcurrentApply
		}
	}
	return nil
}

// trackingUpsert returns the conditional multi-row upsert of rows.
func trackingUpsert(projection string, rows []trackingRow) (string, []any) {
	args := make([]any, 0, 3*len(rows)+1)
	args = append(args, projection)
	var vals strings.Builder
	for i, r := range rows {
		if i > 0 {
			vals.WriteByte(',')
		}
		fmt.Fprintf(&vals, "($1,$%d,$%d,$%d)", 3*i+2, 3*i+3, 3*i+4)
		args = append(args, r.aggregateID, int64(r.version), r.eventID)
	}
	return `INSERT INTO ` + TrackingTable + ` (projection, aggregate_id, version, event_id) VALUES ` +
		vals.String() + ` ON CONFLICT (projection, aggregate_id) DO UPDATE SET version = excluded.version,` +
		` event_id = excluded.event_id, updated_at = CURRENT_TIMESTAMP WHERE ` + TrackingTable + `.version < excluded.version`, args
}

// concurrentMarker is the text of the error writeTrackingLast's
// statement raises when a row did not move.
const concurrentMarker = "esflow: tracking changed concurrently"

// writeTrackingLast is writeTracking for the last statement of a
// transaction. On PostgreSQL it is sent in one round trip with COMMIT,
// so nothing can look at its row count before COMMIT runs: the statement
// checks the count itself and fails when a row did not move (a cast of
// the marker text to integer), which aborts the transaction and so keeps
// the handler's writes from committing; the error is mapped back to
// errConcurrentApply. (CASE keeps the failing cast out of the planner's
// constant folding: it depends on the count.)
func writeTrackingLast(ctx context.Context, tx Tx, projection string, rows []trackingRow) error {
	pt, ok := tx.(*pgTx)
	if !ok || len(rows) == 0 || len(rows) > maxRowsPerStatement {
		return writeTracking(ctx, tx, projection, rows)
	}
	sql, args := trackingUpsert(projection, rows)
	args = append(args, int64(len(rows)))
	sql = `WITH moved AS (` + sql + ` RETURNING 1)
SELECT (CASE WHEN count(*) = $` + strconv.Itoa(len(args)) + ` THEN '0' ELSE '` + concurrentMarker + `' END)::int FROM moved`
	pt.execAtCommit(sql, args, func(err error) error {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "22P02" && strings.Contains(pe.Message, concurrentMarker) {
			return errConcurrentApply
		}
		return fmt.Errorf("projection: write tracking: %w", err)
	})
	return nil
}

// Gap is an event that arrived while an earlier version of its aggregate
// had not been applied.
type Gap struct {
	AggregateID     string
	ExpectedVersion uint64 // the version that is missing (first of the hole)
	SeenVersion     uint64 // the newest version seen beyond it
	EventID         string
	Topic           string
	Partition       int
	Offset          int64
}

func recordGaps(ctx context.Context, tx Tx, projection string, gaps []Gap) error {
	for _, g := range gaps {
		if _, err := tx.Exec(ctx, `INSERT INTO `+GapsTable+` (projection, aggregate_id, expected_version, seen_version,
	event_id, topic, kafka_partition, kafka_offset) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)
ON CONFLICT (projection, aggregate_id) DO UPDATE SET expected_version = excluded.expected_version,
	seen_version = excluded.seen_version, event_id = excluded.event_id, topic = excluded.topic,
	kafka_partition = excluded.kafka_partition, kafka_offset = excluded.kafka_offset, detected_at = CURRENT_TIMESTAMP`,
			projection, g.AggregateID, int64(g.ExpectedVersion), int64(g.SeenVersion), g.EventID, g.Topic, g.Partition, g.Offset); err != nil {
			return fmt.Errorf("projection: record gap: %w", err)
		}
	}
	return nil
}

// unresolvedGaps lists the gaps whose aggregate's tracking is still below
// the version seen beyond the hole.
func unresolvedGaps(ctx context.Context, db DB, projection string) ([]Gap, error) {
	var out []Gap
	err := db.InTx(ctx, func(tx Tx) error {
		rows, err := tx.Query(ctx, `SELECT g.aggregate_id, g.expected_version, g.seen_version, g.event_id, g.topic,
	g.kafka_partition, g.kafka_offset
FROM `+GapsTable+` g LEFT JOIN `+TrackingTable+` t ON t.projection = g.projection AND t.aggregate_id = g.aggregate_id
WHERE g.projection = $1 AND (t.version IS NULL OR t.version < g.seen_version)
ORDER BY g.aggregate_id`, projection)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var g Gap
			var exp, seen int64
			if err := rows.Scan(&g.AggregateID, &exp, &seen, &g.EventID, &g.Topic, &g.Partition, &g.Offset); err != nil {
				return err
			}
			g.ExpectedVersion, g.SeenVersion = uint64(exp), uint64(seen)
			out = append(out, g)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("projection: read gaps: %w", err)
	}
	return out, nil
}

// DeadLetter is a message the runner gave up on.
type DeadLetter struct {
	EventID     string
	AggregateID string
	Version     uint64
	Error       string
	Topic       string
	Partition   int
	Offset      int64
	Redriven    bool
}

func recordDeadLetter(ctx context.Context, tx Tx, projection string, d DeadLetter) error {
	_, err := tx.Exec(ctx, `INSERT INTO `+DeadLettersTable+` (projection, event_id, aggregate_id, version, error, topic,
	kafka_partition, kafka_offset) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)
ON CONFLICT (projection, event_id) DO UPDATE SET error = excluded.error, redriven_at = NULL, dead_lettered_at = CURRENT_TIMESTAMP`,
		projection, d.EventID, d.AggregateID, int64(d.Version), d.Error, d.Topic, d.Partition, d.Offset)
	if err != nil {
		return fmt.Errorf("projection: record dead letter: %w", err)
	}
	return nil
}

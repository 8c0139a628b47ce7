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
	// MembersTable and LeasesTable hold partition ownership (lease.go).
	MembersTable = "esflow_projection_members"
	LeasesTable  = "esflow_projection_leases"
	// MigrationsTable records the bookkeeping schema's applied versions.
	MigrationsTable = "esflow_projection_migrations"
)

// errConcurrentApply means the tracking upsert found a row already at or
// past the version this transaction applied: another consumer (a
// rebuild's swap, a second runner on the same partition) applied it
// first. The batch is rolled back and
// retried; the retry sees the new tracking and skips the duplicates.
var errConcurrentApply = errors.New("projection: tracking changed concurrently")

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

// concurrentMarker and fencedMarker are the texts of the errors
// finishTx's statement raises when a tracking row did not move or a
// lease was not at the expected generation.
const (
	concurrentMarker = "esflow: tracking changed concurrently"
	fencedMarker     = "esflow: partition lease lost"
)

// finishTx is a transaction's last write: the tracking rows and, for
// messages read through partition leases, each partition's next offset,
// written only where the lease is still at the generation this runner
// acquired it at (the fence: a runner that lost a lease while paused
// cannot commit after the new owner, since the new owner's acquisition
// bumped the generation under the same row lock). A tracking row that did
// not move is errConcurrentApply, a lease not at its generation
// ErrLeaseLost; either rolls the whole transaction back.
//
// With last on PostgreSQL it is one statement sent in one round trip with
// COMMIT, so nothing can look at its row counts before COMMIT runs: the
// statement checks the counts itself and fails when one is short (a cast
// of a marker text to integer), which aborts the transaction and so keeps
// the handler's writes from committing; the error is mapped back. (CASE
// keeps the failing cast out of the planner's constant folding: it
// depends on the counts.)
func finishTx(ctx context.Context, tx Tx, projection string, rows []trackingRow, fence []offsetRow, last bool) error {
	pt, ok := tx.(*pgTx)
	if !ok || !last || len(rows)+len(fence) == 0 {
		if err := writeFence(ctx, tx, projection, fence); err != nil {
			return err
		}
		return writeTracking(ctx, tx, projection, rows)
	}
	args := []any{projection}
	var ctes, checks []string
	param := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if len(fence) > 0 {
		topics, parts, gens, nexts := make([]string, len(fence)), make([]int32, len(fence)), make([]int64, len(fence)), make([]int64, len(fence))
		clusters := make([]string, len(fence))
		for i, f := range fence {
			topics[i], parts[i], gens[i], nexts[i], clusters[i] = f.key.topic, int32(f.key.partition), f.gen, f.next, f.cluster
		}
		ctes = append(ctes, `fenced AS (UPDATE `+LeasesTable+` l SET next_offset = v.next,
		cluster_id = CASE WHEN v.cluster = '' THEN l.cluster_id ELSE v.cluster END
	FROM unnest(`+param(topics)+`::text[], `+param(parts)+`::int[], `+param(gens)+`::bigint[], `+param(nexts)+`::bigint[], `+param(clusters)+`::text[]) AS v(topic, part, gen, next, cluster)
	WHERE l.projection = $1 AND l.topic = v.topic AND l.kafka_partition = v.part AND l.generation = v.gen RETURNING 1)`)
		checks = append(checks, `WHEN (SELECT count(*) FROM fenced) <> `+param(int64(len(fence)))+` THEN '`+fencedMarker+`'`)
	}
	if len(rows) > 0 {
		// Arrays rather than a VALUES list: one statement text for any
		// batch, so it is prepared once per connection, not once per batch
		// size (a new process would otherwise prepare one at almost every
		// batch of its first minutes).
		ids, versions, events := make([]string, len(rows)), make([]int64, len(rows)), make([]string, len(rows))
		for i, r := range rows {
			ids[i], versions[i], events[i] = r.aggregateID, int64(r.version), r.eventID
		}
		ctes = append(ctes, `moved AS (INSERT INTO `+TrackingTable+` (projection, aggregate_id, version, event_id)
	SELECT $1, v.id, v.version, v.event FROM unnest(`+param(ids)+`::uuid[], `+param(versions)+`::bigint[], `+param(events)+`::uuid[]) AS v(id, version, event)
	ON CONFLICT (projection, aggregate_id) DO UPDATE SET version = excluded.version, event_id = excluded.event_id, updated_at = CURRENT_TIMESTAMP
	WHERE `+TrackingTable+`.version < excluded.version RETURNING 1)`)
		checks = append(checks, `WHEN (SELECT count(*) FROM moved) <> `+param(int64(len(rows)))+` THEN '`+concurrentMarker+`'`)
	}
	sql := `WITH ` + strings.Join(ctes, ",\n") + `
SELECT (CASE ` + strings.Join(checks, " ") + ` ELSE '0' END)::int`
	pt.execAtCommit(sql, args, func(err error) error {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "22P02" {
			switch {
			case strings.Contains(pe.Message, fencedMarker):
				return ErrLeaseLost
			case strings.Contains(pe.Message, concurrentMarker):
				return errConcurrentApply
			}
		}
		return fmt.Errorf("projection: write tracking: %w", err)
	})
	return nil
}

// writeFence is finishTx's fence as one statement per partition, checked
// at once.
func writeFence(ctx context.Context, tx Tx, projection string, fence []offsetRow) error {
	for _, f := range fence {
		n, err := tx.Exec(ctx, `UPDATE `+LeasesTable+` SET next_offset = $1,
	cluster_id = CASE WHEN CAST($6 AS TEXT) = '' THEN cluster_id ELSE CAST($6 AS TEXT) END
WHERE projection = $2 AND topic = $3 AND kafka_partition = $4 AND generation = $5`,
			f.next, projection, f.key.topic, f.key.partition, f.gen, f.cluster)
		if err != nil {
			return fmt.Errorf("projection: write offset: %w", err)
		}
		if n != 1 {
			return ErrLeaseLost
		}
	}
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

-- The runner's bookkeeping, shared by all projections (the projection
-- column tells them apart). IF NOT EXISTS: databases set up before the
-- schema was versioned already have these tables.

-- Last applied version per aggregate: the duplicate and gap checks.
CREATE TABLE IF NOT EXISTS esflow_projection_tracking (
	projection   TEXT NOT NULL,
	aggregate_id {{.ID}} NOT NULL,
	version      BIGINT NOT NULL,
	event_id     {{.ID}} NOT NULL,
	updated_at   {{.TS}} NOT NULL DEFAULT CURRENT_TIMESTAMP,
	PRIMARY KEY (projection, aggregate_id)
);

-- One row per aggregate with a gap: the newest version seen while an
-- earlier one was missing. It is unresolved while tracking is below
-- seen_version (see UnresolvedGaps), so resolving needs no write on the
-- hot path.
CREATE TABLE IF NOT EXISTS esflow_projection_gaps (
	projection       TEXT NOT NULL,
	aggregate_id     {{.ID}} NOT NULL,
	expected_version BIGINT NOT NULL,
	seen_version     BIGINT NOT NULL,
	event_id         {{.ID}} NOT NULL,
	topic            TEXT NOT NULL,
	kafka_partition  INTEGER NOT NULL,
	kafka_offset     BIGINT NOT NULL,
	detected_at      {{.TS}} NOT NULL DEFAULT CURRENT_TIMESTAMP,
	PRIMARY KEY (projection, aggregate_id)
);

CREATE TABLE IF NOT EXISTS esflow_projection_dead_letters (
	projection       TEXT NOT NULL,
	event_id         {{.ID}} NOT NULL,
	aggregate_id     {{.ID}} NOT NULL,
	version          BIGINT NOT NULL,
	error            TEXT NOT NULL,
	topic            TEXT NOT NULL,
	kafka_partition  INTEGER NOT NULL,
	kafka_offset     BIGINT NOT NULL,
	dead_lettered_at {{.TS}} NOT NULL DEFAULT CURRENT_TIMESTAMP,
	redriven_at      {{.TS}},
	PRIMARY KEY (projection, event_id)
);

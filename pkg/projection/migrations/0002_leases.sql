-- Partition ownership (lease.go, DESIGN.md "Partition leases").

-- The runners of a projection. A member is alive while its heartbeat
-- (seen_ms, the database's clock in Unix milliseconds) is fresher than
-- the lease TTL and, on PostgreSQL, while its session holds the advisory
-- lock (lock_ns, member): a killed process loses that at once.
CREATE TABLE IF NOT EXISTS esflow_projection_members (
	projection TEXT NOT NULL,
	member     BIGINT NOT NULL,
	host       TEXT NOT NULL,
	seen_ms    BIGINT NOT NULL,
	PRIMARY KEY (projection, member)
);

-- One row per partition of a projection's topics. owner is the member
-- applying it (NULL: free); generation grows by one at every
-- acquisition and is checked by every transaction that applies the
-- partition, so an owner that lost the lease (paused, partitioned) can no
-- longer commit. next_offset is the partition's next offset to apply,
-- written in the same transaction as the read model and its tracking
-- (-1: nothing applied through a lease yet).
CREATE TABLE IF NOT EXISTS esflow_projection_leases (
	projection      TEXT NOT NULL,
	topic           TEXT NOT NULL,
	kafka_partition INTEGER NOT NULL,
	owner           BIGINT,
	generation      BIGINT NOT NULL DEFAULT 0,
	next_offset     BIGINT NOT NULL DEFAULT -1,
	PRIMARY KEY (projection, topic, kafka_partition)
);

-- The id of the Kafka cluster a lease row's next_offset was read from,
-- written with the offset. Offsets are positions in one cluster's log: a
-- runner that acquires a partition and finds another cluster (the
-- embedded broker starts a new one, with an empty log, at every start; a
-- move to a new Kafka cluster) reads the partition from its first offset
-- instead, and tracking skips what was applied. '': not known (a row
-- written before this column), and the offset is trusted.
ALTER TABLE esflow_projection_leases ADD COLUMN cluster_id TEXT NOT NULL DEFAULT '';

-- Snapshots: aggregate state at a position, kept apart from the events.
CREATE TABLE IF NOT EXISTS {{.SnapshotTable}} (
    {{.StreamID}} BINARY(16) NOT NULL,
    {{.Position}} BIGINT NOT NULL,
    {{.Topic}} VARCHAR(1024) NOT NULL,
    {{.Data}} LONGBLOB NOT NULL,
    PRIMARY KEY ({{.StreamID}}, {{.Position}})
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Snapshots: aggregate state at a position, kept apart from the events.
CREATE TABLE IF NOT EXISTS {{.SnapshotTable}} (
    {{.StreamID}} uuid NOT NULL,
    {{.Position}} bigint NOT NULL,
    {{.Topic}} text NOT NULL,
    {{.Data}} bytea NOT NULL,
    PRIMARY KEY ({{.StreamID}}, {{.Position}})
);

-- Snapshots: one row per (stream, position); saving again replaces it.
CREATE TABLE IF NOT EXISTS {{.SnapshotTable}} (
    {{.StreamID}} TEXT NOT NULL,
    {{.Position}} INTEGER NOT NULL CHECK ({{.Position}} >= 0),
    {{.Topic}} TEXT NOT NULL,
    {{.Data}} BLOB NOT NULL,
    PRIMARY KEY ({{.StreamID}}, {{.Position}})
) WITHOUT ROWID;

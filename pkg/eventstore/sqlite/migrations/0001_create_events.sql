-- The events table. notification_id is the rowid: SQLite assigns
-- max(rowid)+1 inside the (serialised) write transaction, so ids are
-- 1..N, contiguous, in commit order. See DESIGN.md.
CREATE TABLE IF NOT EXISTS {{.Table}} (
    notification_id INTEGER PRIMARY KEY,
    {{.StreamID}} TEXT NOT NULL,
    {{.Position}} INTEGER NOT NULL CHECK ({{.Position}} >= 0),
    {{.Topic}} TEXT NOT NULL,
    {{.Data}} BLOB NOT NULL,
    UNIQUE ({{.StreamID}}, {{.Position}})
);

-- Topic-filtered reads of the notification log.
CREATE INDEX IF NOT EXISTS {{.TopicIndex}} ON {{.Table}} ({{.Topic}}, notification_id);

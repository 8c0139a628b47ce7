-- Outbox: one row per Kafka record waiting to be published. id is the
-- publish order (AUTOINCREMENT: never reused, even after deletes).
-- key_hash = outbox.KeyHash(key) selects a shard. headers is
-- outbox.EncodeHeaders' stored form (binary; JSON before issue 7's relay
-- work) as a BLOB, NULL when none.
-- created_at is UTC text of fixed width, so it sorts as time.
CREATE TABLE IF NOT EXISTS {{.Table}} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    key BLOB,
    value BLOB,
    headers BLOB,
    key_hash INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    parked_at TEXT,
    park_reason TEXT
);

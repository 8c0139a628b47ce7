-- Shard leases: one row per held shard ("index/count"). A holder renews
-- expires_at (unix milliseconds) while it owns the shard; an expired row
-- may be taken over by anyone.
CREATE TABLE IF NOT EXISTS {{.LeaseTable}} (
    shard TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;

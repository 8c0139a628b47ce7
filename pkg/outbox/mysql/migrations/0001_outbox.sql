-- Outbox: one row per Kafka record waiting to be published. id is the
-- publish order (AUTO_INCREMENT; see DESIGN.md); key_hash =
-- outbox.KeyHash(key) selects a shard. headers is outbox.EncodeHeaders'
-- JSON, NULL when the message has none. created_at is UTC. Parked rows
-- keep their reason and are never fetched again; the index on
-- (parked_at, id) serves both the fetch (parked_at IS NULL, in id order)
-- and the parked count.
CREATE TABLE IF NOT EXISTS {{.Table}} (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    topic VARCHAR(255) NOT NULL,
    `key` BLOB,
    value LONGBLOB,
    headers BLOB,
    key_hash INT NOT NULL,
    created_at DATETIME(6) NOT NULL,
    parked_at DATETIME(6),
    park_reason TEXT,
    KEY {{.FetchIndex}} (parked_at, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Outbox: one row per Kafka record waiting to be published. id is the
-- publish order (see DESIGN.md); key_hash = outbox.KeyHash(key) selects a
-- shard. headers is outbox.EncodeHeaders' stored form (binary
-- since the relay-speed work of issue 7, JSON before), NULL when the message
-- has none. Parked rows keep their reason and
-- are never fetched again.
CREATE TABLE IF NOT EXISTS {{.Table}} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic text NOT NULL,
    key bytea,
    value bytea,
    headers bytea,
    key_hash integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    parked_at timestamptz,
    park_reason text
);

CREATE INDEX IF NOT EXISTS {{.ParkedIndex}}
    ON {{.Table}} (id) WHERE parked_at IS NOT NULL;

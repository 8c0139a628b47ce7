-- Events table: one row per record. seq is the insertion order, tx_id the
-- writing transaction (for diagnostics and outbox correlation),
-- notification_id is assigned after commit by the sequencer (see
-- NOTIFICATIONS.md). The identity must keep CACHE 1 so that seq follows
-- insertion order across sessions.
CREATE TABLE IF NOT EXISTS {{.Table}} (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    {{.StreamID}} uuid NOT NULL,
    {{.Position}} bigint NOT NULL,
    {{.Topic}} text NOT NULL,
    {{.Data}} bytea NOT NULL,
    tx_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
    notification_id bigint,
    CONSTRAINT {{.StreamKey}} UNIQUE ({{.StreamID}}, {{.Position}})
);

CREATE UNIQUE INDEX IF NOT EXISTS {{.NotificationIndex}}
    ON {{.Table}} (notification_id);

CREATE INDEX IF NOT EXISTS {{.PendingIndex}}
    ON {{.Table}} (seq) WHERE notification_id IS NULL;

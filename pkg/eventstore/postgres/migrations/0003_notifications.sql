-- Notification ids move out of the events table into an insert-only,
-- narrow table written by the background sequencer (see NOTIFICATIONS.md):
-- numbering no longer rewrites the event row. Existing ids are kept.
--
-- The lock keeps writers (and the sequencers of older versions, whose
-- UPDATE needs ROW EXCLUSIVE) out while the ids are carried over, so the
-- baseline snapshot below covers exactly the rows numbered here.
LOCK TABLE {{.Table}} IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE IF NOT EXISTS {{.Notifications}} (
    notification_id bigint NOT NULL,
    seq bigint NOT NULL,
    -- The fence: an id or an event numbered twice violates one of these,
    -- whatever number of sequencers runs.
    CONSTRAINT {{.NotificationsKey}} PRIMARY KEY (notification_id),
    CONSTRAINT {{.NotificationsSeqKey}} UNIQUE (seq)
);

-- The sequencer's baseline: every events row of a transaction visible in
-- this snapshot is numbered. One row.
CREATE TABLE IF NOT EXISTS {{.SequencerState}} (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    baseline pg_snapshot NOT NULL,
    numbered_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO {{.Notifications}} (notification_id, seq)
SELECT notification_id, seq FROM {{.Table}} WHERE notification_id IS NOT NULL;

-- Rows committed but never read were not numbered yet: they follow, in
-- insertion order, as the former sequencer would have numbered them.
INSERT INTO {{.Notifications}} (notification_id, seq)
SELECT (SELECT coalesce(max(notification_id), 0) FROM {{.Notifications}}) + row_number() OVER (ORDER BY seq), seq
FROM {{.Table}} WHERE notification_id IS NULL;

INSERT INTO {{.SequencerState}} (baseline) VALUES (pg_current_snapshot())
ON CONFLICT (singleton) DO NOTHING;

-- Drops the column's unique index and the partial index of unnumbered
-- rows with it: two index entries less per appended event.
ALTER TABLE {{.Table}} DROP COLUMN IF EXISTS notification_id;

-- The sequencer finds the rows of transactions that committed since its
-- baseline by their transaction id.
CREATE INDEX IF NOT EXISTS {{.TxIndex}} ON {{.Table}} (tx_id);

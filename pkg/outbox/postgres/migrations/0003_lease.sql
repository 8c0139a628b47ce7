-- Relay leases, one row per shard lock (LockKey): the advisory lock says
-- who owns a shard now, this row says until when the previous owner may
-- still believe it does. A new owner waits until expires_at has passed
-- before it publishes; a holder renews expires_at every PingInterval and
-- stops sending produce requests before it (see the relay's DESIGN.md,
-- "Fencing"). generation counts the owners.
CREATE TABLE IF NOT EXISTS {{.Leases}} (
    lock_key bigint PRIMARY KEY,
    generation bigint NOT NULL,
    holder_pid integer NOT NULL,
    expires_at timestamptz NOT NULL
);

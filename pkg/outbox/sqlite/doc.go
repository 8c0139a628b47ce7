// Package sqlite is the SQLite transactional outbox. [Outbox] wraps a
// [sqlite.Store] event store (pkg/eventstore/sqlite) and writes outbox
// messages in the same transaction as the records ([Store.BeginTx] +
// [Store.AppendTx] + one INSERT per message, then COMMIT), so both are
// stored or neither is. It implements [eventstore.OutboxRecorder],
// [outbox.Source], [outbox.Locker] and [outbox.Waker].
//
// # Tables
//
// [Outbox.Migrate] runs the event store's migrations, then creates the
// outbox table (Config.OutboxTable, default "esflow_outbox") and its lease
// table (OutboxTable + "_leases"), recording the versions in
// esflow_schema_migrations under the outbox table's name. Columns: id
// (AUTOINCREMENT, the publish order), topic, key, value, headers
// ([outbox.EncodeHeaders]' binary form, NULL when empty), key_hash
// ([outbox.KeyHash] of the key), created_at (UTC text), parked_at and
// park_reason.
//
// # Locks
//
// A shard is owned through a lease row (holder id, expires_at) taken or
// renewed atomically with one UPSERT; a lease lasts Config.LeaseDuration
// (default 5 s) and a goroutine renews it every Config.RenewInterval
// (default 1 s). If a renewal fails or finds the lease taken by someone
// else, the lost channel is closed. A crashed holder's shard is free once
// its lease expires. Lease times come from the local clock, which is
// shared by every process using the same database file.
//
// # Wake-ups
//
// Only in-process: commits through this Outbox wake its Wake channels. A
// relay in another process relies on polling.
//
// # Store handles
//
// On an in-memory store the only connection is busy during an append's
// transaction; other calls wait for it. [Outbox.Close] does not close
// the event store.
//
// [Store.BeginTx]: https://pkg.go.dev/github.com/esflow/esflow/pkg/eventstore/sqlite#Store.BeginTx
// [Store.AppendTx]: https://pkg.go.dev/github.com/esflow/esflow/pkg/eventstore/sqlite#Store.AppendTx
// [sqlite.Store]: https://pkg.go.dev/github.com/esflow/esflow/pkg/eventstore/sqlite#Store
package sqlite

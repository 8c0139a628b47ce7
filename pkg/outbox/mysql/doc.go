// Package mysql is the MariaDB / MySQL transactional outbox. [Outbox]
// wraps a [mysqlstore.Store] event store (pkg/eventstore/mysql) and
// writes outbox messages in the same transaction as the records
// ([mysqlstore.Store.BeginTx], [mysqlstore.Store.AppendTx], one
// multi-row INSERT of the messages, COMMIT), so both are stored or neither
// is. It implements [eventstore.OutboxRecorder], [outbox.Source],
// [outbox.Locker] and [outbox.Waker].
//
// # Tables
//
// [Outbox.Migrate] runs the event store's migrations, then creates the
// outbox table (Config.OutboxTable, default "esflow_outbox"), recording
// its versions in the event store's migrations table under the outbox
// table's name. Columns: id (AUTO_INCREMENT, the publish order), topic,
// key, value, headers ([outbox.EncodeHeaders], NULL when none), key_hash
// ([outbox.KeyHash] of the key), created_at (UTC, microseconds),
// parked_at and park_reason.
//
// # Locks
//
// A shard is owned through a named server lock (GET_LOCK) held by a
// dedicated connection; see [Outbox.Lock] and [LockName]. The server
// frees it when that session ends, so a crashed relay's shard is taken
// over on a waiting replica's next retry.
//
// # Wake-ups
//
// MariaDB has no LISTEN/NOTIFY. Commits through an Outbox wake that
// Outbox's Wake channels at once (a relay in the same process); each Wake
// channel also polls the outbox's highest id every
// Config.WakePollInterval (20 ms), so a relay in another process that
// uses the Outbox as its Waker wakes within about that interval. DESIGN.md
// explains this and why id order keeps per-aggregate order.
//
// [mysqlstore.Store]: https://pkg.go.dev/github.com/esflow/esflow/pkg/eventstore/mysql#Store
package mysql

// Package postgres is the PostgreSQL backend of the event store, built on
// pgx/v5. [Store] implements [eventstore.Recorder] and
// [eventstore.SnapshotRecorder].
//
// # Usage
//
//	store, err := postgres.Open(ctx, "postgres://app@db/app", postgres.Config{})
//	if err != nil { … }
//	defer store.Close()
//	if err := store.Migrate(ctx); err != nil { … } // explicit, idempotent
//
// Use [New] instead of [Open] to share a [pgxpool.Pool] the application
// already has; [Store.Close] then leaves the pool open.
//
// # Tables
//
// [Config.Schema] names the events table and its columns (zero value:
// [eventstore.DefaultSchema]; [eventstore.StoredEventsSchema] is the
// alternative layout). Names are checked with [eventstore.Schema.Validate]
// and quoted with [eventstore.Quote]; an invalid name makes [New] fail
// with an error matching [eventstore.ErrInvalidIdentifier]. Next to the
// configured columns the table has seq (insertion order) and tx_id (the
// writing transaction); notification ids live in <table>_notifications
// and the sequencer's state in <table>_sequencer. [Store.Migrate] applies
// the embedded, versioned migrations under an advisory lock and records
// them in [MigrationsTable].
//
// # Appending
//
// [Store.Append] writes a batch with a single INSERT … SELECT FROM
// unnest(…): BEGIN and the INSERT travel in one round trip, then COMMIT.
// Conflicts — a position already taken, or a stream that does not reach
// the batch's first position — roll the batch back and return an error
// matching [eventstore.ErrConcurrency] that names the stream
// ([eventstore.Error]). [Store.AppendTx] does the same inside a caller's
// transaction, for writing an outbox atomically with the events.
//
// # Notifications
//
// Notification IDs are contiguous from 1 and assigned after commit by a
// background sequencer that every store opened for writing runs (it
// starts with the first Migrate, Append, AppendTx, [Store.Committed] or
// [Store.Sequence]; [Config.NoSequencer] turns it off). One sequencer per
// table is active, holding an advisory lock keyed by the table's oid;
// the others stand by. It numbers whole transactions, so one
// transaction's records are one contiguous run of IDs, and writes only
// the narrow notifications table, never the event row. Writers never
// serialise on a global counter, rolled-back appends leave no gaps, and
// a reader that has seen ID n never later meets a record with an ID <= n.
//
// Readers only read: [Store.ReadNotifications] and
// [Store.MaxNotificationID] wait (up to [Config.ReadWait]) for records
// committed before the call to be numbered, then return what is.
// [Config.Hooks] observes the sequencer: [LogHooks] logs it, package
// seqmetrics exports it to Prometheus (esflow_sequencer_*), and
// [JoinHooks] combines them. NOTIFICATIONS.md in this
// directory explains the design, why it is correct, and the caveats.
package postgres

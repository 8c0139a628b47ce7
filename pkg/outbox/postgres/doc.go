// Package postgres is the PostgreSQL transactional outbox, built on pgx/v5.
// [Outbox] wraps a [pgstore.Store] (pkg/eventstore/postgres) and shares its
// pool. It implements [eventstore.OutboxRecorder],
// [eventstore.SnapshotRecorder], [outbox.Source], [outbox.Locker] and
// [outbox.Waker].
//
//	store, _ := pgstore.Open(ctx, dsn, pgstore.Config{})
//	defer store.Close()
//	ob, err := postgres.New(store, postgres.Config{})
//	defer ob.Close() // before store.Close
//	err = ob.Migrate(ctx) // event store tables + outbox, idempotent
//
// # Writing
//
// [Outbox.AppendWithOutbox] writes the records and messages with one
// statement (one round trip, its own implicit transaction): a CTE inserts
// the outbox rows and the event rows (VALUES lists for up to 8 of each,
// which PostgreSQL plans once per connection; unnest over column arrays
// for larger batches; see DESIGN.md), using the event store's conflict
// rules. A stream whose first record does not
// continue it makes a helper function raise (SQLSTATE ES409), so the
// statement fails as a whole; a taken position violates the stream key.
// Both are reported as [eventstore.ErrConcurrency] and leave no message.
// Messages without a topic are refused ([outbox.ErrUnroutable]).
//
// # Table
//
// Config.OutboxTable (default "esflow_outbox"): id (identity, publish
// order), topic, key, value, headers (bytea holding
// [outbox.EncodeHeaders]' binary form, NULL when none), key_hash
// ([outbox.KeyHash]), created_at, parked_at, park_reason. Migrations are
// embedded, versioned and recorded in esflow_schema_migrations under the
// outbox table's name. [Outbox.Backlog] does not count parked rows;
// [Outbox.Parked] does.
//
// # Locks and wake-ups
//
// [Outbox.Lock] holds a session-level advisory lock on a pooled connection
// and a lease beside it ([Outbox.LockFenced] returns its [outbox.Fence]),
// renewed by a goroutine; [Outbox.Wake] LISTENs on a dedicated connection.
// NOTIFY is sent after commit by a coalescing goroutine, never inside the
// write transaction. DESIGN.md explains why.
//
// # WAL mode
//
// With Config.WAL (PostgreSQL with wal_level=logical) no outbox row is
// written: each message is a transactional logical-decoding message
// emitted by the append statement, and [Outbox.WALSource] is the relay's
// source, streaming them from a replication slot with pgoutput
// (github.com/jackc/pglogrepl) and confirming a position only once every
// message before it was published. WAL.md explains the mode, its
// guarantees and its limits.
//
// [Outbox.Close] stops the notifier; it does not close the event store.
//
// [pgstore.Store]: https://pkg.go.dev/github.com/esflow/esflow/pkg/eventstore/postgres#Store
package postgres

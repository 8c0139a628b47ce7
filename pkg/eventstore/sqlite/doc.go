// Package sqlite is the embedded default backend of esflow: an
// [eventstore.Recorder] and [eventstore.SnapshotRecorder] on SQLite,
// through the pure-Go modernc.org/sqlite driver (no cgo).
//
// [Open] takes a data source name ([ParseDSN] lists the forms, e.g.
// "sqlite:///var/lib/app/events.db" or "sqlite::memory:") and a [Config]
// whose zero value uses [eventstore.DefaultSchema]. [New] wraps a
// caller-owned *sql.DB instead. Tables are created by the explicit,
// idempotent [Store.Migrate]; [Store.Close] releases the store.
//
// [Store.Append] writes a batch of records of one or more streams in one
// transaction, checking each stream's expected version; conflicts match
// [eventstore.ErrConcurrency]. [Store.AppendTx] does the same inside a
// transaction from [Store.BeginTx], so other rows can commit atomically
// with the events. Notification IDs are 1, 2, 3, ... in commit order and
// never skip: SQLite admits one writer at a time, and each ID is
// max+1 inside that writer's transaction (see DESIGN.md).
//
// Opening an in-memory store:
//
//	ctx := context.Background()
//	store, err := sqlite.Open(ctx, "sqlite::memory:", sqlite.Config{})
//	if err != nil {
//		return err
//	}
//	defer store.Close()
//	if err := store.Migrate(ctx); err != nil {
//		return err
//	}
//	err = store.Append(ctx, []eventstore.Record{{
//		StreamID: uuid.New(), Position: 0, Topic: "Created", Data: []byte(`{}`),
//	}})
//
// An in-memory database belongs to its Store and lives on a single
// connection; a database file uses WAL, a busy timeout
// ([DefaultBusyTimeout]) and BEGIN IMMEDIATE write transactions on every
// pooled connection, so concurrent writers queue instead of failing.
package sqlite

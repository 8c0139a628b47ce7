// Package mysql is the MariaDB / MySQL backend of the event store, on
// database/sql with github.com/go-sql-driver/mysql. [Store] implements
// [eventstore.Recorder] and [eventstore.SnapshotRecorder].
//
// # Usage
//
//	store, err := mysql.Open(ctx, "mysql://app:secret@db:3306/app", mysql.Config{})
//	if err != nil { … }
//	defer store.Close()
//	if err := store.Migrate(ctx); err != nil { … } // explicit, idempotent
//
// [ParseDSN] lists the accepted connection strings; whatever they say, the
// pool parses times as UTC, sends arguments as prepared-statement
// parameters and runs one statement per call. Use [New] to share a pool
// the application already has ([OpenDB] builds one).
//
// # Tables
//
// [Config.Schema] names the events table and its columns (zero value:
// [eventstore.DefaultSchema]; [eventstore.StoredEventsSchema] is the seed
// pages' alternative). Names are checked with [eventstore.Schema.Validate]
// and quoted with [Quote]; an invalid name makes [Open] and [New] fail
// with an error matching [eventstore.ErrInvalidIdentifier]. Stream ids
// are BINARY(16), positions BIGINT, topics VARCHAR(1024) (longer ones are
// refused as [eventstore.ErrInvalidRecord]), data LONGBLOB. Next to the
// configured columns the table has notification_id, its primary key.
// [Store.Migrate] applies the embedded, versioned migrations under a
// named server lock and records them in [MigrationsTable]
// ([ApplyMigrations], which the outbox uses too).
//
// # Appending and the notification log
//
// [Store.Append] writes a batch in one transaction: a counter UPDATE that
// hands out the batch's notification ids, then one multi-row INSERT. The
// counter row stays locked until COMMIT, so appends to one table are
// serialised for those two statements and commit in id order: ids are
// 1, 2, 3, … without gaps. [Store.ReadNotifications] is a locking read
// that waits for an append in flight, so a reader never sees id n before
// every id below n (DESIGN.md argues it; pools from [OpenDB] run at READ
// COMMITTED, so these reads take no gap locks). A taken position fails the stream's
// unique key; a first position beyond a stream's end fails a predecessor
// check; both return an error matching [eventstore.ErrConcurrency] that
// names the stream and write nothing. [Store.AppendTx] does the same in a
// caller's transaction from [Store.BeginTx] (the outbox).
//
// Statements run prepared, from a per-Store cache, so a call costs one
// round trip per statement rather than a PREPARE and an EXECUTE.
package mysql

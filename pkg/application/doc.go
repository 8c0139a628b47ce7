// Package application assembles an event-sourced application: an event
// store on the backend a database URL selects, repositories that load and
// save aggregates, and the notification log that presents every event in
// one global order.
//
// # Getting started
//
//	reg := aggregate.NewRegistry()
//	domain.Register(reg) // your event and aggregate types
//	app, err := application.NewFromEnv(ctx, reg) // DATABASE_URL, CIPHER_KEY
//	if err != nil { … }
//	defer app.Close()
//
//	worlds := application.NewRepository(app.Store, func() *domain.World { return new(domain.World) })
//	world, _ := domain.NewWorld("gods")
//	world.MakeItSo("dinosaurs")
//	err = app.Save(ctx, world)           // atomic; ErrConcurrency when stale
//	copy, err := worlds.Get(ctx, world.ID())
//
// DATABASE_URL (alias DB_URI) selects the backend: memory:, sqlite::memory:,
// sqlite:///path/to/file.db, or postgres://…; empty means SQLite in
// memory. CIPHER_KEY (base64 of 32 bytes, see
// eventstore.GenerateCipherKey) encrypts stored events. See [Config].
//
// # Repositories
//
// [Repository] serves aggregates that embed aggregate.Root: Get (an error
// matching [ErrNotFound] for a missing or discarded aggregate), GetAt for
// the state at an earlier version, Contains, Save. Snapshots are used
// transparently and taken every N events with [SnapshotEvery] or
// Config.SnapshotEvery. [EntityRepository] serves a bring-your-own model:
// a plain struct rebuilt by a [Mutator] function, whose events reach the
// store through a [PersistencePolicy] subscribed to an aggregate.Bus.
// [Save] stores aggregates of different types in one transaction.
//
// # Notification log
//
// [LocalLog] presents the store's notifications in sections "a,b" (1,10;
// 11,20; …). A section names the next one only once it is complete, so a
// [Reader] that follows sections never skips a notification, even one
// committed late by a concurrent writer. [LogHandler] serves a log over
// HTTP as JSON and [RemoteLog] reads it from another process through the
// same Reader.
//
// # Tracing
//
// [Application.Save] (and [Save], [Repository.Save]) is an OpenTelemetry
// span "esflow.save" with the aggregates' type, id, version and event
// count, and an error status on failure; the event store writes the
// span's W3C trace context into the outbox messages' headers
// ([outbox.SetTraceContext]), so that the relay's and the projectors'
// spans link back to it. Config.TracerProvider (default the global
// provider) chooses where the spans go.
package application

// Package eventstore stores domain events as records and reads them back.
//
// The layers, as on the seed pages:
//
//   - a [Recorder] (backend) writes and reads [Record] values: stream id,
//     position, topic, data. Backends live in subpackages: memory, sqlite
//     (the embedded default) and postgres (production). Every one passes
//     the conformance suite in eventstoretest.
//   - a [Mapper] turns aggregate.Event values into records: a JSON
//     envelope, optionally compressed, optionally encrypted with a
//     [Cipher] (AES-256-GCM, key from [GenerateCipherKey]); decoding
//     verifies each event's hash and upcasts old payload versions.
//   - an [EventStore] combines the two, and stores snapshots when the
//     recorder is also a [SnapshotRecorder].
//
// Appends are atomic across streams and use optimistic concurrency: a
// record's position is its stream's expected version, and a stale one
// fails with [ErrConcurrency] having written nothing. Every record also
// gets a notification id in one global order (1, 2, 3, …) that readers
// follow without ever skipping a record committed late by a concurrent
// writer; each backend documents how it keeps that promise.
//
// Table and column names are configurable through [Schema]:
// [DefaultSchema] is events(sequence_id, position, topic, data),
// [StoredEventsSchema] is the seed pages' stored_events(aggregate_id,
// aggregate_version, event_type, state). Names are validated, then quoted.
//
// Errors are [*Error] values carrying the operation, stream and position,
// and unwrap to the sentinels: [ErrConcurrency], [ErrNotFound],
// [ErrIntegrity], [ErrUnknownEventType], [ErrCipher], [ErrTooLarge],
// [ErrInvalidRecord], [ErrInvalidIdentifier], [ErrClosed], and
// [ErrUnavailable]: each backend translates its own driver's "retry later"
// errors (connection refused or lost, too many connections, shutdown,
// deadlock, serialization failure, lock timeout, SQLite busy) with
// [Unavailable], so callers branch on the sentinel, never on a driver's
// error codes or text.
package eventstore

// Package memory is an in-process outbox for tests and prototypes. [Outbox]
// wraps a [memory.Store] event store (pkg/eventstore/memory) and keeps the
// outbox messages in Go memory. It implements
// [eventstore.OutboxRecorder], [outbox.Source], [outbox.Locker] and
// [outbox.Waker].
//
// AppendWithOutbox appends the records to the wrapped store and the
// messages to the outbox while holding the outbox's mutex, so a failed
// append (for example a concurrency conflict) stores neither. Locks are
// per-shard semaphores inside this Outbox, and wake-ups are in-process
// signals: there is no other process to coordinate with. Nothing survives
// the process.
//
// [memory.Store]: https://pkg.go.dev/github.com/esflow/esflow/pkg/eventstore/memory#Store
package memory

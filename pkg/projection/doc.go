// Package projection consumes published domain events from Kafka and
// keeps read models exactly right in PostgreSQL or SQLite.
//
// A [Projection] names its topics and tables, creates its tables in
// Setup and applies events in Handle (or, faster, a whole batch in
// [BatchHandler.HandleBatch]). A [Runner] reads the topics' partitions
// (kafka-go fetch requests, one reader per leased partition) and applies
// each batch in one database
// transaction ([DB], [Tx]: [NewPostgres] over pgx, [NewSQLite] over
// database/sql), together with the tracking table that records, per
// aggregate, the last version applied, and each partition's next offset.
// With [RunnerConfig.Lanes] above 1, batches of different partitions are
// applied concurrently, each partition still in order.
// Delivery is at least once; tracking makes the effect exactly once:
//
//   - a version already applied is a duplicate and is skipped;
//   - the next version is applied;
//   - a later version is a gap: held back and recorded until the missing
//     event, which the relay re-sends in order, arrives ([Runner.UnresolvedGaps]).
//
// A message whose handler keeps failing, or that is not an event
// envelope, goes to the dead-letter topic and the runner moves on;
// [Runner.Redrive] applies dead letters again once the handler is fixed.
// [Runner.Status] and [Runner.Ready] report lag, and [Runner.WaitFor]
// gives read-your-writes after a command. [Hooks] observe it all.
//
// Tables are addressed through [Tables], so the same projection can fill
// shadow tables. [Rebuild] rebuilds a read model from scratch — from the
// event store's notification log ([StoreSource]) or the topics' earliest
// offsets ([KafkaSource]) — into shadow tables with progress output, and
// swaps them in for the live ones in one transaction, tracking included,
// while the live runner keeps serving and afterwards neither applies an
// event twice nor misses one. Package projmetrics exports the hooks and
// [Runner.Status] as Prometheus metrics.
//
// The runners of a projection (replicas of a service) share its
// partitions through lease rows in the read model's own database
// ([LeasesTable], [MembersTable]) instead of a consumer group: a killed
// runner's partitions are taken over within about
// [RunnerConfig.LeaseCheck], a stopped one hands them over the moment it
// is told to stop (on PostgreSQL the others are woken by a notification),
// and a runner that lost a lease while paused cannot commit any more
// ([ErrLeaseLost]): every applying transaction checks the lease's
// generation.
//
// DESIGN.md explains the choices.
//
// # Tracing
//
// Each applied batch is a span [SpanApply] (OpenTelemetry API, from
// RunnerConfig.TracerProvider or the global provider), linked to the span
// named by each message's W3C traceparent header, with the projection,
// partitions, offsets and the counts of applied, duplicate and held-back
// events as attributes ([AttrProjection] and the others). A missing or
// malformed traceparent gives no link and does not affect the apply.
package projection

// Package suite holds the machinery of the end-to-end fault suite
// (integration.TestFaults):
//
//   - [Env]: which PostgreSQL and Kafka to use — existing servers, containers
//     when a Docker engine answers, or a [LocalPG] cluster (restartable)
//     and the embedded broker (stoppable and restartable on its address);
//   - [Pipeline]: the writer, relay and projector processes, each a
//     supervised [Service] that can be killed, paused and restarted, and
//     [Recoveries], the time to recover after each fault;
//   - the load: [StartLoad] through [HTTPWriter] clients of cmd/writer,
//     with the [Ledger] of acknowledged writes;
//   - the checks: the independent [TopicChecker] (its own Kafka client, no
//     consumer group), the event store read as the reference
//     ([ReadStore]), [CompareReadModels] and the concurrency check
//     [RunContention].
//
// It is test infrastructure: nothing outside integration tests imports it.
package suite

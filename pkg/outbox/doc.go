// Package outbox is the transactional outbox: Kafka messages written in the
// same database transaction as the events they announce, so both commit or
// neither does, and published later by a relay (package relay).
//
// Turn it on with application.Config.Outbox (or eventstore.Options.Outbox):
// every append then also writes one [Message] per event, built by a
// [Builder]: topic from the [Router] (default "esflow." + aggregate type),
// key = aggregate id (so one aggregate's events share a partition), value =
// the JSON [Envelope] documented on that type, and headers
// (esflow-event-id, esflow-event-type, esflow-aggregate-id,
// esflow-aggregate-type, esflow-aggregate-version, esflow-timestamp,
// content-type, correlation/causation ids, and the W3C trace context
// (traceparent, tracestate) of the appending caller's span, or else from
// the event's metadata; see [SetTraceContext]). With encryption at rest, Builder.KeepEncrypted
// publishes the ciphertext instead of the payload. A service can add its own
// integration messages to the same transaction with
// application.Application.SaveWithMessages.
//
// Backends live in subpackages — postgres (LISTEN/NOTIFY wake-ups sent
// after commit, advisory-lock failover), sqlite (polling, lease table) and
// memory — and implement the relay's interfaces [Source], [Locker] and
// [Waker]; outboxtest is their conformance suite.
//
// Delivery is at least once: consumers deduplicate by event_id or by
// (aggregate_id, aggregate_version).
package outbox

// Package relay publishes a transactional outbox to Kafka.
//
// A [Relay] takes its shard's lock (one active replica per shard), then
// loops: fetch up to BatchSize messages in id order, [Publisher].Publish
// them (acks from all in-sync replicas), delete them, and fetch again at
// once; when the shard is empty it waits for a wake-up from the outbox
// backend (PostgreSQL LISTEN/NOTIFY, sent after commit) or its poll
// interval. With an [outbox.FencedLocker] (the PostgreSQL outbox) the
// shard is a lease: the relay checks its fence before each fetch and
// passes it to the publisher ([WithFence]), which checks it before every
// produce request, so a relay paused past its lease publishes nothing
// after its successor started. Broker errors back off exponentially with jitter; messages the
// broker refuses for good are parked with the reason. Cancelling Run's
// context finishes the in-flight batch and returns.
//
// The publisher on segmentio/kafka-go is in subpackage kafkapub, Prometheus
// metrics in relaymetrics, and the deployable service is cmd/relay.
// DESIGN.md beside this file gives the delivery and ordering argument.
//
// # Tracing
//
// Each published batch is a span [SpanPublish] (OpenTelemetry API, from
// Config.TracerProvider or the global provider): a root span linked to
// the span named by each message's traceparent header, which the relay
// publishes unchanged with the message's other headers.
package relay

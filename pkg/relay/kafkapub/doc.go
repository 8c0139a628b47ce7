// Package kafkapub is a relay.Publisher that writes outbox messages to
// Kafka with github.com/segmentio/kafka-go's protocol client.
//
// # Delivery
//
// Every write uses acks=all (kafka.RequireAll): Publish returns nil only
// when every message was acknowledged by all in-sync replicas. Delivery is
// at least once: a produce request that timed out may have been appended,
// and Publish then sends the same batch again (there is no idempotent
// producer), so consumers may see a message twice. They never see the
// messages of one key out of order (see below), except that a duplicate
// run of a batch may follow the original.
//
// # Partitioning
//
// Keys are mapped to partitions with kafka.Murmur2Balancer, the same
// murmur2 hash the Java client's default partitioner and librdkafka's
// "murmur2_random" partitioner use, so a key lands on the same partition
// whichever of these clients produced it, and every message of one key goes
// to one partition (as long as the topic's partition count does not
// change). Messages with a nil key are spread at random and have no order.
//
// # How messages are sent
//
// Publish does not use kafka-go's Writer. It partitions the messages
// itself (Balancer, with the topic's partitions from the Transport's
// cached metadata) and sends one Produce request per leader broker that
// holds every partition's share of the call as one record batch: on a
// one-broker cluster, one request and one response per call. kafka-go's
// Writer sent one request per partition and held each partial batch for
// BatchTimeout first; BenchmarkPublish (1000 messages of ~250 bytes, 8
// partitions) went from about 6 ms to 1.2-1.5 ms per call, and the relay
// spent a third less CPU per message.
//
// # Ordering argument
//
// The relay's ordering argument needs: messages of one key reach their
// partition in slice order, and a message is never appended after a later
// message of its key was acknowledged. This package gets it from these
// properties:
//
//  1. Publish calls are serialised (one at a time per Publisher, including
//     the tail of a call whose ctx ended: the next call waits until the
//     previous one's requests are settled).
//  2. Within a call, each partition's messages are cut, in slice order,
//     into chunks of at most BatchSize messages and MaxMessageBytes bytes.
//     Round r sends chunk r of every partition and waits for all of them
//     before round r+1: at most one record batch per partition is in
//     flight, and Kafka appends a record batch atomically, so a
//     partition's messages of a chunk are all appended or none is.
//  3. A chunk that fails with a retryable error is sent again, whole,
//     before anything later of its partition (up to MaxAttempts times,
//     with backoff). If it still fails, Publish sends no later round:
//     those messages are reported failed (errNotSent) without being sent.
//     So no message is sent after an earlier message of its key failed in
//     this call, and the relay, which retries failed messages in their
//     original order, never creates a gap.
//
// Permanent failures (relay.ErrPermanent) do not stop the call: the relay
// parks those messages and goes on with the rest of their key anyway.
//
// A broker can refuse a whole batch as too large (MESSAGE_TOO_LARGE) when
// its max.message.bytes is below MaxMessageBytes. Then the refused messages
// are sent again one by one, in order, so that only a message that is too
// large on its own is reported permanent.
//
// # What a failed call reports
//
// Publish returns *relay.BatchError with Errs aligned to msgs. A produce
// error applies to one partition's record batch, so the messages of one
// partition in one chunk succeed or fail together, while other partitions'
// messages of the same round are acknowledged independently. Messages
// refused locally (too large, invalid topic name) never reach the network
// and do not affect the others of the call, which are written normally.
//
// # Topics
//
// The Publisher uses its own kafka.Transport, never kafka.DefaultTransport,
// whose cached metadata keeps reporting a just-created topic as unknown.
// With AutoCreateTopics, a topic not yet known is created with CreateTopics
// (Partitions, ReplicationFactor) before the first write to it; "already
// exists" counts as success. Without it, a topic the cluster does not have
// is reported as a transient error until the Transport's metadata cache
// has been refreshed at least twice (2×MetadataTTL), and as permanent
// (kafka.UnknownTopicOrPartition) after that.
//
// # CloudEvents
//
// Next to the esflow-* headers every domain event gets the CloudEvents
// Kafka protocol binding's headers in binary mode (ce_specversion, ce_id,
// ce_source, ce_type, ce_time, ce_subject; content-type is the binding's
// datacontenttype), derived from the esflow-* headers as the record is
// built, so a CloudEvents SDK reads each message as an event whose data is
// the envelope. [Config].CloudEvents sets ce_source or turns them off; see
// [CloudEvents].
package kafkapub

// Package kafkapub is a relay.Publisher that writes outbox messages to
// Kafka with github.com/segmentio/kafka-go.
//
// # Delivery
//
// Every write uses acks=all (kafka.RequireAll): Publish returns nil only
// when every message was acknowledged by all in-sync replicas. Delivery is
// at least once: a produce request that timed out may have been appended,
// and kafka-go then sends the same batch again (kafka-go has no idempotent
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
// # Ordering argument
//
// The relay's ordering argument needs: messages of one key reach their
// partition in slice order, and a message is never appended after a later
// message of its key was acknowledged. This package gets it from four
// properties, checked against kafka-go v0.4.51's Writer:
//
//  1. kafka-go keeps one partitionWriter per topic-partition, and that
//     writer has a single goroutine that takes batches off a FIFO queue and
//     writes them one at a time. A batch's retries (up to MaxAttempts, with
//     backoff) happen inside that goroutine, re-sending the same batch
//     whole, before the next batch is taken. So per partition there is at
//     most one produce request in flight, and batches are appended in the
//     order they were queued.
//  2. Publish calls are serialised (one at a time per Publisher, including
//     the tail of a call whose ctx ended: the next call waits until kafka-go
//     has finished with the previous one's messages), so a kafka-go batch
//     never mixes two calls' messages.
//  3. Publish splits msgs into chunks of at most BatchSize messages and at
//     most MaxMessageBytes bytes (by an estimate no smaller than kafka-go's
//     own), and writes one chunk at a time, waiting for it. With
//     kafka-go's BatchSize and BatchBytes set to those same limits, each
//     partition's share of a chunk fits in one kafka-go batch, so it goes
//     out as one produce request: Kafka appends a record batch atomically,
//     so a partition's messages of a chunk are all appended or none is.
//  4. When any message of a chunk fails with a retryable error, Publish
//     sends no later chunk: those messages are reported failed (errNotSent)
//     without being sent. So no message is sent after an earlier message of
//     its key failed in this call, and the relay, which retries failed
//     messages in their original order, never creates a gap.
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
// Publish returns *relay.BatchError with Errs aligned to msgs. With
// kafka-go, a produce error applies to all messages of its partition batch
// (kafka.WriteErrors is filled per batch), so the messages of one partition
// in one chunk succeed or fail together, while other partitions' messages
// of the same chunk are acknowledged independently. Messages refused
// locally (too large, invalid topic name) never reach the network and do
// not affect the others of the call, which are written normally.
//
// # BatchTimeout
//
// kafka-go flushes a partition's batch when it holds BatchSize messages or
// BatchTimeout has passed since its first message. A relay sends a slice and
// waits, so nearly every partition batch is partial and waits the whole
// BatchTimeout: kafka-go's default of 1 s stalls every Publish for a
// second. The default here is 1 ms: BenchmarkPublish (one caller, slices
// of 1000 messages of ~250 bytes, 8 partitions, in-process kfake broker,
// 2 cores) measured about 190-300k msgs/s at 1 ms, 140-180k at 2 ms and
// 65-75k at 10 ms; the machine is noisy, but the order held in every run.
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
package kafkapub

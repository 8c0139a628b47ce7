package projection

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// fetchWait is how long the broker holds a fetch of a caught-up
// partition before answering empty.
const fetchWait = 250 * time.Millisecond

// fetcher sends the partition readers' fetch requests through one
// kafka-go Transport per runner, which keeps the cluster's metadata and
// pools connections to the leaders. A reader that starts (a partition
// just acquired, in a failover or a hand-over) therefore sends its first
// fetch at once, on a connection that is usually open already: a
// kafka-go Reader would first look the leader up, dial it and read the
// partition's offsets twice, several round trips to a broker that, in a
// rolling restart, is answering every other new reader too.
type fetcher struct {
	newTransport func() *kafka.Transport
	brokers      []string

	mu sync.Mutex
	c  *kafka.Client
}

func newFetcher(brokers []string, d *kafka.Dialer) *fetcher {
	return &fetcher{
		brokers: brokers,
		newTransport: func() *kafka.Transport {
			t := &kafka.Transport{DialTimeout: 10 * time.Second, MetadataTTL: 5 * time.Second}
			if d != nil {
				t.TLS, t.SASL, t.ClientID = d.TLS, d.SASLMechanism, d.ClientID
				if d.Timeout > 0 {
					t.DialTimeout = d.Timeout
				}
			}
			return t
		},
	}
}

// client returns the current client.
func (f *fetcher) client() *kafka.Client {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.c == nil {
		f.c = &kafka.Client{Addr: kafka.TCP(f.brokers...), Timeout: 10 * time.Second, Transport: f.newTransport()}
	}
	return f.c
}

// reset replaces c after a failed fetch: the transport routes by
// metadata it refreshes only every MetadataTTL, so a leader that moved
// is found at once by a fresh one. Readers that failed with the same
// client replace it once.
func (f *fetcher) reset(c *kafka.Client) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.c == c {
		f.c = nil
		if t, ok := c.Transport.(*kafka.Transport); ok {
			t.CloseIdleConnections()
		}
	}
}

// close closes the idle connections; a later client call opens new ones.
func (f *fetcher) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.c != nil {
		if t, ok := f.c.Transport.(*kafka.Transport); ok {
			t.CloseIdleConnections()
		}
		f.c = nil
	}
}

// warm loads the cluster's metadata and opens a connection, so that the
// first partitions acquired fetch without waiting for them.
func (f *fetcher) warm(ctx context.Context, topics []string) {
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, _ = f.client().Metadata(wctx, &kafka.MetadataRequest{Topics: topics})
}

// clusterID is the id of the cluster c talks to ("" if it cannot tell).
func (f *fetcher) clusterID(ctx context.Context, c *kafka.Client) string {
	mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	res, err := c.Metadata(mctx, &kafka.MetadataRequest{})
	if err != nil {
		return ""
	}
	return res.ClusterID
}

// firstOffset is the first offset partition k holds.
func (f *fetcher) firstOffset(ctx context.Context, c *kafka.Client, k partitionKey) (int64, error) {
	res, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{
		Topics: map[string][]kafka.OffsetRequest{k.topic: {kafka.FirstOffsetOf(k.partition)}},
	})
	if err != nil {
		return 0, err
	}
	for _, p := range res.Topics[k.topic] {
		if p.Partition == k.partition {
			if p.Error != nil {
				return 0, p.Error
			}
			return p.FirstOffset, nil
		}
	}
	return 0, fmt.Errorf("no offsets of %s/%d in the answer", k.topic, k.partition)
}

// readPartition fetches one leased partition from l.start into out until
// ctx ends, retrying failed fetches with backoff. A broker that lost its
// log (the embedded broker keeps nothing across a restart) makes it read
// the partition again from its first offset: an offset the partition
// does not hold says so, and so does, after failed fetches, a cluster id
// other than the one the loop started with, since the new log may
// already have grown past the offset by the time the loop reconnects
// (pkg/broker starts a new cluster id each time; a Kafka cluster keeps
// its id). For the same reason a stored offset read from another cluster
// than the one the loop starts on (a projector restarted with the
// embedded broker, a move to a new Kafka cluster) is not used: the loop
// reads from the first offset, and tracking skips what was applied. Each
// message carries the cluster id it came from, and the transaction that
// applies it stores the id with the offset; with the id unknown (the
// broker did not say) the stored offset is trusted, as before the id
// was stored.
func (r *Runner) readPartition(ctx context.Context, l *lease, out chan<- item) {
	k := l.key
	offset := l.start
	backoff := r.cfg.RetryBackoff
	began, first, checked := time.Now(), true, false
	failed := false // Ready is false until a fetch succeeds again
	cluster := r.fetch.clusterID(ctx, r.fetch.client())
	// stored is the cluster l.start was read from, until it has been
	// compared with the one the loop talks to.
	stored := l.cluster
	fail := func(c *kafka.Client, op string, err error) {
		r.setReaderTrouble(true)
		failed = true
		r.hooks.Failed("fetch", err)
		r.log.Warn(op+" failed; retrying", "topic", k.topic, "partition", k.partition, "error", err, "backoff", backoff)
		r.fetch.reset(c)
		sleep(ctx, backoff)
		backoff = min(2*backoff, 5*time.Second)
	}
	for ctx.Err() == nil {
		c := r.fetch.client()
		if cluster == "" && failed {
			cluster = r.fetch.clusterID(ctx, c) // the broker was not answering at the start
		}
		if stored != "" && cluster != "" {
			if stored != cluster && offset >= 0 {
				r.log.Warn("the stored offset is of another Kafka cluster; reading the partition from its first offset",
					"topic", k.topic, "partition", k.partition, "offset", offset, "stored_cluster", stored, "cluster", cluster)
				offset = kafka.FirstOffset
			}
			stored = ""
		}
		if failed && cluster != "" {
			switch id := r.fetch.clusterID(ctx, c); {
			case id == "":
			case id != cluster:
				r.log.Warn("the broker is a new cluster (its log is gone); reading the partition from its first offset",
					"topic", k.topic, "partition", k.partition, "offset", offset, "cluster", id)
				offset, cluster = kafka.FirstOffset, id
			}
		}
		if offset < 0 {
			o, err := r.fetch.firstOffset(ctx, c, k)
			if err != nil {
				if ctx.Err() == nil {
					fail(c, "reading the first offset", err)
				}
				continue
			}
			offset = o
		}
		sent := time.Now()
		res, err := c.Fetch(ctx, &kafka.FetchRequest{
			Topic: k.topic, Partition: k.partition, Offset: offset,
			MinBytes: 1, MaxBytes: 16 << 20, MaxWait: fetchWait,
		})
		if err == nil && res.Error != nil {
			err = res.Error
		}
		if err != nil {
			switch {
			case ctx.Err() != nil:
			case errors.Is(err, kafka.OffsetOutOfRange):
				r.log.Warn("offset not on the broker; reading the partition from its first offset",
					"topic", k.topic, "partition", k.partition, "offset", offset)
				offset = kafka.FirstOffset
			default:
				fail(c, "fetch", err)
			}
			continue
		}
		backoff = r.cfg.RetryBackoff
		if failed {
			r.setReaderTrouble(false)
			failed = false
		}
		if !checked {
			checked = true
			if first && offset >= res.HighWatermark {
				// Nothing was waiting when the fetch was sent: the takeover
				// is complete without a message to apply. fetch_waited is
				// how long ago that was (the fetch waits for a message).
				r.log.Info("partition caught up", "topic", k.topic, "partition", k.partition,
					"offset", offset, "fetch_waited", time.Since(sent).Round(time.Millisecond).String())
			}
		}
		for {
			m, err := nextMessage(res, k)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				// What was read before the error is applied; the next fetch
				// starts after it.
				r.log.Warn("reading a fetched batch", "topic", k.topic, "partition", k.partition, "error", err)
				break
			}
			if m.Offset < offset {
				continue // a compressed batch can start before the offset asked for
			}
			offset = m.Offset + 1
			if first {
				first = false
				// How long a takeover waits for the broker: the first fetch.
				r.log.Info("partition reading", "topic", k.topic, "partition", k.partition,
					"offset", m.Offset, "first_message_after", time.Since(began).Round(time.Millisecond).String())
			}
			r.mu.Lock()
			r.readerTrouble = time.Time{}
			r.lastFetch = time.Now()
			r.pending++
			r.mu.Unlock()
			it := item{m: m, lease: l, cluster: cluster}
			it.e, it.bad = decodeMessage(m, r.cfg.Mapper)
			select {
			case out <- it:
			case <-ctx.Done():
				r.mu.Lock()
				r.pending--
				r.mu.Unlock()
				return
			}
		}
	}
}

// nextMessage reads the next record of a fetch response as a message;
// io.EOF after the last one.
func nextMessage(res *kafka.FetchResponse, k partitionKey) (kafka.Message, error) {
	rec, err := res.Records.ReadRecord()
	if err != nil {
		return kafka.Message{}, err
	}
	key, err := readBytes(rec.Key)
	if err != nil {
		return kafka.Message{}, err
	}
	value, err := readBytes(rec.Value)
	if err != nil {
		return kafka.Message{}, err
	}
	headers := make([]kafka.Header, len(rec.Headers)) // the record set may reuse its buffers
	for i, h := range rec.Headers {
		headers[i] = kafka.Header{Key: h.Key, Value: append([]byte(nil), h.Value...)}
	}
	return kafka.Message{
		Topic: k.topic, Partition: k.partition, Offset: rec.Offset, HighWaterMark: res.HighWatermark,
		Key: key, Value: value, Headers: headers, Time: rec.Time,
	}, nil
}

// readBytes copies a record's key or value out of the response.
func readBytes(b kafka.Bytes) ([]byte, error) {
	if b == nil {
		return nil, nil
	}
	defer b.Close()
	out := make([]byte, b.Len())
	if _, err := io.ReadFull(b, out); err != nil {
		return nil, err
	}
	return out, nil
}

package kafkapub

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"

	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/relay"
)

// Defaults for the zero fields of Config.
const (
	DefaultClientID          = "esflow-relay"
	DefaultWriteTimeout      = 10 * time.Second
	DefaultMaxAttempts       = 3
	DefaultPartitions        = 8
	DefaultReplicationFactor = -1 // the broker's default.replication.factor
	DefaultMaxMessageBytes   = 1 << 20
	DefaultBatchSize         = 1000
	DefaultMetadataTTL       = time.Second
)

// Config configures a Publisher. Only Brokers is required.
type Config struct {
	// Brokers are the bootstrap addresses (host:port).
	Brokers []string
	// ClientID is sent to the brokers. Default DefaultClientID.
	ClientID string
	// TLS, if not nil, enables TLS to the brokers.
	TLS *tls.Config
	// SASL, if not nil, authenticates the connections.
	SASL sasl.Mechanism

	// BatchSize is the most messages of one partition sent in one record
	// batch; a partition's longer share of a Publish call is sent in
	// several, one after the other. Default DefaultBatchSize (1000).
	BatchSize int
	// WriteTimeout bounds one produce request (and the metadata and
	// topic-creation requests). Default 10 s.
	WriteTimeout time.Duration
	// MaxAttempts is how many times a record batch that fails with a
	// retryable error is sent before Publish reports the failure; the
	// relay retries after that. Default 3.
	MaxAttempts int

	// AutoCreateTopics creates a missing topic before the first write to
	// it, with Partitions and ReplicationFactor. Without it, writing to a
	// missing topic is a permanent failure (after a short grace period, see
	// the package documentation).
	AutoCreateTopics bool
	// Partitions of auto-created topics. Default 8.
	Partitions int
	// ReplicationFactor of auto-created topics; -1 asks for the broker's
	// default.replication.factor. Default -1.
	ReplicationFactor int

	// MaxMessageBytes is the largest message accepted, counted as kafka-go
	// counts it (key, value, headers and about 30 bytes of framing), and
	// the largest total of one record batch. A larger
	// message is refused locally as permanent. Keep it at or below the
	// brokers' message.max.bytes (1048588 by default). Default 1 MiB.
	MaxMessageBytes int

	// Balancer maps a message to a partition. It must send every message
	// of one key to one partition. It is given the message's Topic, Key
	// and Value (not its headers). Default kafka.Murmur2Balancer{}, the
	// Java client's and librdkafka's key hash.
	Balancer kafka.Balancer

	// MetadataTTL is how often the Transport refreshes its cached cluster
	// metadata. Default 1 s.
	MetadataTTL time.Duration

	// CloudEvents configures the ce_* headers of the CloudEvents Kafka
	// binding written next to the esflow-* ones (on by default).
	CloudEvents CloudEvents
}

func (c *Config) setDefaults() error {
	if len(c.Brokers) == 0 {
		return errors.New("kafkapub: no brokers configured")
	}
	for _, b := range c.Brokers {
		if b == "" {
			return errors.New("kafkapub: empty broker address")
		}
	}
	if c.ClientID == "" {
		c.ClientID = DefaultClientID
	}
	if c.BatchSize <= 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.Partitions < 0 {
		return fmt.Errorf("kafkapub: invalid Partitions %d", c.Partitions)
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = DefaultReplicationFactor
	}
	if c.ReplicationFactor < -1 {
		return fmt.Errorf("kafkapub: invalid ReplicationFactor %d", c.ReplicationFactor)
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.Balancer == nil {
		c.Balancer = kafka.Murmur2Balancer{}
	}
	if c.MetadataTTL <= 0 {
		c.MetadataTTL = DefaultMetadataTTL
	}
	return nil
}

// Publisher publishes outbox messages to Kafka. It is safe for concurrent
// use; calls are serialised (see the package documentation).
type Publisher struct {
	cfg       Config
	transport *kafka.Transport
	addr      net.Addr
	client    *kafka.Client
	ceSource  []byte // ce_source; nil: no CloudEvents headers

	// fence is the fence of the Publish call holding sem, if it has one
	// (relay.WithFence); fencedConn checks it before every write.
	fence atomic.Pointer[fenceRef]

	// sem holds one token: the right to write. A call whose ctx ended
	// leaves the token with its background job until its requests are
	// settled.
	sem chan struct{}

	mu           sync.Mutex
	known        map[string]bool      // topics seen with partitions
	unknownSince map[string]time.Time // first time a topic was missing

	closeOnce sync.Once
	closeErr  error
	done      chan struct{} // closed by Close
}

var _ relay.Publisher = (*Publisher)(nil)

// errNotSent marks a message that was not sent because an earlier message
// of the same call failed; sending it could reorder its key.
var errNotSent = errors.New("kafkapub: not sent: an earlier message of the batch failed")

// ErrClosed is returned by Publish after Close.
var ErrClosed = errors.New("kafkapub: publisher closed")

// New returns a Publisher. It does not connect until the first Publish.
func New(cfg Config) (*Publisher, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	cfg.Brokers = append([]string(nil), cfg.Brokers...)
	transport := &kafka.Transport{
		ClientID:    cfg.ClientID,
		TLS:         cfg.TLS,
		SASL:        cfg.SASL,
		DialTimeout: 5 * time.Second,
		MetadataTTL: cfg.MetadataTTL,
	}
	addr := kafka.TCP(cfg.Brokers...)
	p := &Publisher{
		cfg:          cfg,
		transport:    transport,
		addr:         addr,
		client:       &kafka.Client{Addr: addr, Transport: transport, Timeout: cfg.WriteTimeout},
		ceSource:     cfg.CloudEvents.source(),
		sem:          make(chan struct{}, 1),
		known:        map[string]bool{},
		unknownSince: map[string]time.Time{},
		done:         make(chan struct{}),
	}
	p.sem <- struct{}{}
	dialer := &net.Dialer{Timeout: transport.DialTimeout}
	transport.Dial = func(ctx context.Context, network, address string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, address)
		if err != nil {
			return nil, err
		}
		return &fencedConn{Conn: c, fence: &p.fence}, nil
	}
	return p, nil
}

// fencedConn is a broker connection that refuses to write while the
// Publish call in progress carries a fence that failed: the check closest
// to the bytes leaving the process (kafka-go's transport writes a request
// from its own goroutine, some time after RoundTrip was called). A
// refused write breaks the connection, and kafka-go dials a new one.
type fencedConn struct {
	net.Conn
	fence *atomic.Pointer[fenceRef]
}

// fenceRef boxes the fence of the Publish call in progress.
type fenceRef struct{ f outbox.Fence }

func (c *fencedConn) Write(b []byte) (int, error) {
	if r := c.fence.Load(); r != nil {
		if err := r.f.Check(); err != nil {
			return 0, fmt.Errorf("kafkapub: write refused: %w", err)
		}
	}
	return c.Conn.Write(b)
}

// Close waits for any write still in progress, then releases the
// connections. It is idempotent.
func (p *Publisher) Close() error {
	p.closeOnce.Do(func() {
		close(p.done)
		// Take the write token so no job is running while the
		// connections close; it is never given back.
		<-p.sem
		p.transport.CloseIdleConnections()
	})
	return p.closeErr
}

// Publish writes msgs and waits until all were acknowledged by all in-sync
// replicas. On failure it returns *relay.BatchError whose Errs[i] is nil
// for each acknowledged message; failures retrying cannot fix satisfy
// errors.Is(err, relay.ErrPermanent).
//
// If ctx ends first, Publish returns a plain error at once. Messages already
// sent may still be written after that (at most one record batch per
// partition and its retries, bounded by MaxAttempts×WriteTimeout); no
// further part of msgs is sent, and the next call waits until those
// requests are settled, so per-partition order holds. msgs' byte slices must not be
// modified until then.
func (p *Publisher) Publish(ctx context.Context, msgs []outbox.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	select {
	case <-p.done:
		return ErrClosed
	default:
	}
	select {
	case <-p.sem:
	case <-p.done:
		return ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("kafkapub: publish: %w", ctx.Err())
	}
	select {
	case <-p.done:
		p.sem <- struct{}{}
		return ErrClosed
	default:
	}

	errs := make([]error, len(msgs))
	result := make(chan struct{})
	go func() {
		defer func() { p.sem <- struct{}{} }()
		p.publish(ctx, msgs, errs)
		close(result)
	}()
	select {
	case <-result:
	case <-ctx.Done():
		return fmt.Errorf("kafkapub: publish: %w", ctx.Err())
	}
	for _, err := range errs {
		if err != nil {
			return &relay.BatchError{Errs: errs}
		}
	}
	return nil
}

// publish runs with the write token held and fills errs.
func (p *Publisher) publish(ctx context.Context, msgs []outbox.Message, errs []error) {
	// Local checks: nothing refused here reaches the network.
	sizes := make([]int, len(msgs))
	topics := map[string]error{}
	for i := range msgs {
		m := &msgs[i]
		if err := checkTopicName(m.Topic); err != nil {
			errs[i] = err
			continue
		}
		sizes[i] = messageSize(m) + cloudEventsSize(m, p.ceSource)
		if sizes[i] > p.cfg.MaxMessageBytes {
			errs[i] = fmt.Errorf("%w: %w: message %d is %d bytes, limit %d",
				relay.ErrPermanent, kafka.MessageSizeTooLarge, m.ID, sizes[i], p.cfg.MaxMessageBytes)
			continue
		}
		topics[m.Topic] = nil
	}
	// Topic checks: messages of a topic that cannot be written fail
	// alone; other topics' partitions are unaffected.
	for t := range topics {
		topics[t] = p.ensureTopic(ctx, t)
	}
	pending := make([]int, 0, len(msgs))
	for i := range msgs {
		if errs[i] != nil {
			continue
		}
		if err := topics[msgs[i].Topic]; err != nil {
			errs[i] = err
			continue
		}
		pending = append(pending, i)
	}

	if f := relay.FenceFrom(ctx); f != nil {
		p.fence.Store(&fenceRef{f})
		defer p.fence.Store(nil)
	}
	bound := time.Duration(p.cfg.MaxAttempts+1) * (p.cfg.WriteTimeout + time.Second)
	// The requests outlive ctx (up to a backstop bound): the caller's
	// goroutine returns on ctx, this one keeps the write token until no
	// message of the call is in flight.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), bound)
	defer cancel()
	p.produceAll(ctx, wctx, msgs, pending, sizes, errs)
}

// classify wraps a write error, marking the permanent ones.
func (p *Publisher) classify(topic string, err error) error {
	switch {
	case errors.Is(err, kafka.MessageSizeTooLarge),
		errors.Is(err, kafka.InvalidTopic),
		errors.Is(err, kafka.TopicAuthorizationFailed),
		errors.Is(err, kafka.InvalidRecord):
		return fmt.Errorf("%w: %w", relay.ErrPermanent, err)
	case errors.Is(err, kafka.UnknownTopicOrPartition):
		// The topic vanished since it was checked: check it again next
		// time.
		p.forget(topic)
	}
	return fmt.Errorf("kafkapub: write to %s: %w", topic, err)
}

// ensureTopic returns nil when topic exists (creating it if configured
// to), else the error for its messages.
func (p *Publisher) ensureTopic(ctx context.Context, topic string) error {
	p.mu.Lock()
	ok := p.known[topic]
	p.mu.Unlock()
	if ok {
		return nil
	}
	terr, err := p.topicMetadata(ctx, topic)
	if err != nil {
		return err
	}
	if terr == nil {
		p.markKnown(topic)
		return nil
	}
	switch {
	case errors.Is(terr, kafka.UnknownTopicOrPartition):
		if p.cfg.AutoCreateTopics {
			return p.createTopic(ctx, topic)
		}
		// The Transport's cache may predate the topic: permanent only
		// once the cache has been refreshed since we first missed it.
		p.mu.Lock()
		since, seen := p.unknownSince[topic]
		if !seen {
			since = time.Now()
			p.unknownSince[topic] = since
		}
		p.mu.Unlock()
		if time.Since(since) > 2*p.cfg.MetadataTTL {
			return fmt.Errorf("%w: topic %q: %w (auto-creation is off)", relay.ErrPermanent, topic, terr)
		}
		return fmt.Errorf("kafkapub: topic %q: %w", topic, terr)
	case errors.Is(terr, kafka.InvalidTopic), errors.Is(terr, kafka.TopicAuthorizationFailed):
		return fmt.Errorf("%w: topic %q: %w", relay.ErrPermanent, topic, terr)
	default:
		return fmt.Errorf("kafkapub: topic %q: %w", topic, terr)
	}
}

// topicMetadata looks topic up in the Transport's metadata. terr is the
// topic's own error (nil when it exists with partitions); err is a
// failure of the lookup.
func (p *Publisher) topicMetadata(ctx context.Context, topic string) (terr, err error) {
	mctx, cancel := context.WithTimeout(ctx, p.cfg.WriteTimeout)
	defer cancel()
	md, err := p.client.Metadata(mctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("kafkapub: metadata for topic %q: %w", topic, err)
	}
	for _, t := range md.Topics {
		if t.Name != topic {
			continue
		}
		if t.Error != nil {
			return t.Error, nil
		}
		if len(t.Partitions) == 0 {
			return kafka.UnknownTopicOrPartition, nil
		}
		return nil, nil
	}
	return kafka.UnknownTopicOrPartition, nil
}

func (p *Publisher) markKnown(topic string) {
	p.mu.Lock()
	p.known[topic] = true
	delete(p.unknownSince, topic)
	p.mu.Unlock()
}

// createTopic creates topic and waits until the Transport's metadata
// shows it.
func (p *Publisher) createTopic(ctx context.Context, topic string) error {
	cctx, cancel := context.WithTimeout(ctx, p.cfg.WriteTimeout)
	defer cancel()
	resp, err := p.client.CreateTopics(cctx, &kafka.CreateTopicsRequest{
		Topics: []kafka.TopicConfig{{
			Topic:             topic,
			NumPartitions:     p.cfg.Partitions,
			ReplicationFactor: p.cfg.ReplicationFactor,
		}},
	})
	if err != nil {
		return fmt.Errorf("kafkapub: create topic %q: %w", topic, err)
	}
	if cerr := resp.Errors[topic]; cerr != nil && !errors.Is(cerr, kafka.TopicAlreadyExists) {
		if errors.Is(cerr, kafka.InvalidTopic) || errors.Is(cerr, kafka.TopicAuthorizationFailed) {
			return fmt.Errorf("%w: create topic %q: %w", relay.ErrPermanent, topic, cerr)
		}
		return fmt.Errorf("kafkapub: create topic %q: %w", topic, cerr)
	}
	// kafka-go refreshes its metadata after a successful CreateTopics,
	// but not after "already exists": wait for the cache to catch up.
	for {
		terr, err := p.topicMetadata(cctx, topic)
		if err != nil {
			return err
		}
		if terr == nil {
			p.markKnown(topic)
			return nil
		}
		if !errors.Is(terr, kafka.UnknownTopicOrPartition) {
			return fmt.Errorf("kafkapub: topic %q after creation: %w", topic, terr)
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-t.C:
		case <-cctx.Done():
			t.Stop()
			return fmt.Errorf("kafkapub: topic %q created but not yet in metadata: %w", topic, cctx.Err())
		}
	}
}

// forget makes the next call check topic again.
func (p *Publisher) forget(topic string) {
	p.mu.Lock()
	delete(p.known, topic)
	p.mu.Unlock()
}

func markAll(errs []error, idx []int, err error) {
	for _, i := range idx {
		errs[i] = err
	}
}

// messageSize estimates a message's size the way kafka-go's Writer counts
// it against BatchBytes, rounded up: 22 bytes of fixed framing plus key and
// value, and at most 5 bytes of varint per length around the headers.
func messageSize(m *outbox.Message) int {
	n := 22 + len(m.Key) + len(m.Value) + 5
	for _, h := range m.Headers {
		n += 5 + len(h.Key) + 5 + len(h.Value)
	}
	return n
}

// checkTopicName applies Kafka's rules for topic names: 1 to 249
// characters from [a-zA-Z0-9._-], and not "." or "..".
func checkTopicName(t string) error {
	bad := len(t) == 0 || len(t) > 249 || t == "." || t == ".."
	for i := 0; !bad && i < len(t); i++ {
		c := t[i]
		bad = !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-')
	}
	if bad {
		return fmt.Errorf("%w: %w: %q", relay.ErrPermanent, kafka.InvalidTopic, t)
	}
	return nil
}

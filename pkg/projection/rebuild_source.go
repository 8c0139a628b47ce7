package projection

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/outbox"
)

// RebuildSource is where [Rebuild] reads a projection's events from:
// [StoreSource] (the event store's notification log) or [KafkaSource]
// (the topics from their earliest offsets).
type RebuildSource interface {
	open(ctx context.Context, r *Runner) (feed, error)
}

// feed is an open source: it hands out items up to a mark, the end of
// the source when mark was last called.
type feed interface {
	// mark moves the end to reach to the source's current end.
	mark(ctx context.Context) error
	// next returns up to n items before the mark, none when it is reached.
	next(ctx context.Context, n int) ([]item, error)
	// unread puts items back to be returned first by the next call to next
	// (a swap attempt that was rolled back).
	unread(items []item)
	// position reports how far the feed is and where the mark is.
	position() (pos, target int64)
	close() error
}

// StoreSource reads the events straight from an event store: its
// notification log, in global order, decoded through the store's Mapper
// (so encrypted stores work) into the same [Event] the runner decodes
// from the relay's message. Only events that Router sends to one of the
// projection's topics are applied.
type StoreSource struct {
	// Store is the event store that feeds the topics (through the outbox
	// and the relay). Required.
	Store *eventstore.EventStore
	// Router must route events as the relay's outbox builder does.
	// Default the zero Router: "esflow." + aggregate type.
	Router outbox.Router
	// PageSize is how many notifications one read returns. Default 1000.
	PageSize int
}

func (s StoreSource) open(_ context.Context, r *Runner) (feed, error) {
	if s.Store == nil {
		return nil, errors.New("projection: StoreSource needs a Store")
	}
	setDefault(&s.PageSize, 1000)
	return &storeFeed{src: s, topics: r.p.Topics(), builder: outbox.Builder{Router: s.Router, Registry: s.Store.Registry()}}, nil
}

type storeFeed struct {
	src     StoreSource
	topics  []string
	builder outbox.Builder
	pos     uint64 // last notification id read
	target  uint64
	back    []item
}

func (f *storeFeed) mark(ctx context.Context) error {
	max, err := f.src.Store.Recorder().MaxNotificationID(ctx)
	if err != nil {
		return fmt.Errorf("projection: rebuild: read the notification log's end: %w", err)
	}
	f.target = max
	return nil
}

func (f *storeFeed) position() (int64, int64) { return int64(f.pos), int64(f.target) }

func (f *storeFeed) unread(items []item) { f.back = append(items[:len(items):len(items)], f.back...) }

func (f *storeFeed) close() error { return nil }

func (f *storeFeed) next(ctx context.Context, n int) ([]item, error) {
	if len(f.back) > 0 {
		k := min(n, len(f.back))
		out := f.back[:k:k]
		f.back = f.back[k:]
		return out, nil
	}
	var out []item
	for len(out) == 0 && f.pos < f.target {
		ns, err := f.src.Store.Notifications(ctx, eventstore.NotificationQuery{Start: f.pos + 1, Limit: int(min(uint64(min(n, f.src.PageSize)), f.target-f.pos))})
		if err != nil {
			return nil, fmt.Errorf("projection: rebuild: read notifications after %d: %w", f.pos, err)
		}
		if len(ns) == 0 {
			// An id up to the mark is assigned but not visible yet (its
			// transaction is committing): the log never skips, so wait.
			if !sleep(ctx, 5*time.Millisecond) {
				return nil, ctx.Err()
			}
			continue
		}
		for _, nt := range ns {
			f.pos = nt.ID
			it, ok, err := f.item(nt)
			if err != nil {
				return nil, err
			}
			if ok {
				out = append(out, it)
			}
		}
	}
	return out, nil
}

// item decodes a notification into the Event the runner would decode from
// the relay's message; ok is false for events routed to other topics.
func (f *storeFeed) item(nt eventstore.Notification) (item, bool, error) {
	ev, err := f.src.Store.Mapper().Decode(nt.Record)
	if err != nil {
		// The store's own records must decode; this is no poison message
		// to skip but a broken store or a wrong key.
		return item{}, false, fmt.Errorf("projection: rebuild: decode notification %d: %w", nt.ID, err)
	}
	topic, err := f.builder.Router.Topic(ev)
	if err != nil {
		return item{}, false, fmt.Errorf("projection: rebuild: notification %d: %w", nt.ID, err)
	}
	if !slices.Contains(f.topics, topic) {
		return item{}, false, nil
	}
	payload, err := aggregate.MarshalPayload(ev.Payload)
	if err != nil {
		return item{}, false, fmt.Errorf("projection: rebuild: notification %d: %w", nt.ID, err)
	}
	schema := 1
	if reg := f.builder.Registry; reg != nil {
		schema = max(reg.CurrentVersion(ev.Type), 1)
	}
	e := Event{
		EventID: ev.ID, EventType: ev.Type, AggregateID: ev.AggregateID, AggregateType: ev.AggregateType,
		AggregateVersion: ev.Version, Timestamp: ev.Time.UTC(), SchemaVersion: schema, Metadata: ev.Metadata,
		Payload: payload, Topic: topic, Partition: -1, Offset: int64(nt.ID),
	}
	build := func() (kafka.Message, error) {
		msgs, err := f.builder.Messages([]aggregate.Event{ev}, nil, false)
		if err != nil {
			return kafka.Message{}, err
		}
		m := msgs[0]
		km := kafka.Message{Topic: m.Topic, Partition: -1, Offset: int64(nt.ID), Key: m.Key, Value: m.Value}
		for _, h := range m.Headers {
			km.Headers = append(km.Headers, kafka.Header{Key: h.Key, Value: h.Value})
		}
		return km, nil
	}
	return item{e: e, build: build}, true, nil
}

// KafkaSource reads the projection's topics from their earliest offsets,
// partition by partition, without a consumer group. The topics must still
// hold every event (retention): otherwise the rebuilt read model misses
// the deleted ones, and the swap refuses to replace a live model that is
// ahead of it (ErrRebuildBehind).
type KafkaSource struct {
	// Brokers to bootstrap from. Default the rebuild runner's Brokers.
	Brokers []string
	// Dialer opens the connections. Default the runner's Dialer.
	Dialer *kafka.Dialer
}

func (s KafkaSource) open(ctx context.Context, r *Runner) (feed, error) {
	if len(s.Brokers) == 0 {
		s.Brokers = r.cfg.Brokers
	}
	if s.Dialer == nil {
		s.Dialer = r.cfg.Dialer
	}
	if s.Dialer == nil {
		s.Dialer = kafka.DefaultDialer
	}
	if len(s.Brokers) == 0 {
		return nil, errors.New("projection: KafkaSource: no brokers")
	}
	f := &kafkaFeed{src: s, r: r}
	for _, topic := range r.p.Topics() {
		parts, err := s.Dialer.LookupPartitions(ctx, "tcp", s.Brokers[0], topic)
		if err != nil {
			return nil, fmt.Errorf("projection: rebuild: partitions of %s: %w", topic, err)
		}
		for _, p := range parts {
			rd := kafka.NewReader(kafka.ReaderConfig{
				Brokers: s.Brokers, Topic: topic, Partition: p.ID, Dialer: s.Dialer,
				MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 250 * time.Millisecond,
				QueueCapacity: max(r.cfg.BatchSize, 100),
			})
			if err := rd.SetOffset(kafka.FirstOffset); err != nil {
				_ = rd.Close()
				_ = f.close()
				return nil, fmt.Errorf("projection: rebuild: read %s/%d: %w", topic, p.ID, err)
			}
			f.parts = append(f.parts, &kafkaPart{topic: topic, partition: p.ID, reader: rd})
		}
	}
	return f, nil
}

type kafkaFeed struct {
	src   KafkaSource
	r     *Runner
	parts []*kafkaPart
	back  []item
}

type kafkaPart struct {
	topic     string
	partition int
	reader    *kafka.Reader
	pos       int64 // next offset to hand out
	target    int64 // end offset (exclusive) to reach
}

func (f *kafkaFeed) mark(ctx context.Context) error {
	for _, p := range f.parts {
		conn, err := f.src.Dialer.DialLeader(ctx, "tcp", f.src.Brokers[0], p.topic, p.partition)
		if err != nil {
			return fmt.Errorf("projection: rebuild: connect to the leader of %s/%d: %w", p.topic, p.partition, err)
		}
		first, last, err := conn.ReadOffsets()
		_ = conn.Close()
		if err != nil {
			return fmt.Errorf("projection: rebuild: offsets of %s/%d: %w", p.topic, p.partition, err)
		}
		if p.pos < first {
			if p.pos == 0 && first > 0 {
				f.r.log.Warn("rebuild: the topic no longer holds its first messages (retention); the rebuild will miss them",
					"topic", p.topic, "partition", p.partition, "first_offset", first)
			}
			p.pos = first
		}
		p.target = last
	}
	return nil
}

func (f *kafkaFeed) position() (pos, target int64) {
	for _, p := range f.parts {
		pos += p.pos
		target += p.target
	}
	return pos, target
}

func (f *kafkaFeed) unread(items []item) { f.back = append(items[:len(items):len(items)], f.back...) }

func (f *kafkaFeed) close() error {
	var errs []error
	for _, p := range f.parts {
		errs = append(errs, p.reader.Close())
	}
	return errors.Join(errs...)
}

// next takes messages from the partitions that have not reached their
// target, round robin, a slice of the batch from each.
func (f *kafkaFeed) next(ctx context.Context, n int) ([]item, error) {
	if len(f.back) > 0 {
		k := min(n, len(f.back))
		out := f.back[:k:k]
		f.back = f.back[k:]
		return out, nil
	}
	var out []item
	for len(out) < n {
		progressed := false
		for _, p := range f.parts {
			for k := 0; p.pos < p.target && len(out) < n && k < 100; k++ {
				m, err := p.reader.FetchMessage(ctx)
				if err != nil {
					f.unread(out) // taken from the partitions: not lost
					return nil, fmt.Errorf("projection: rebuild: read %s/%d at %d: %w", p.topic, p.partition, p.pos, err)
				}
				p.pos = m.Offset + 1
				progressed = true
				it := item{m: m}
				it.e, it.bad = decodeMessage(m, f.r.cfg.Mapper)
				out = append(out, it)
			}
		}
		if !progressed {
			break
		}
	}
	return out, nil
}

package kafkapub_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/esflow/esflow/pkg/broker"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/relay"
	"github.com/esflow/esflow/pkg/relay/kafkapub"
)

func startBroker(tb testing.TB, cfg broker.Config) *broker.Broker {
	tb.Helper()
	b, err := broker.Start(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("broker.Start: %v", err)
	}
	tb.Cleanup(func() { _ = b.Close() })
	return b
}

func newPublisher(tb testing.TB, cfg kafkapub.Config) *kafkapub.Publisher {
	tb.Helper()
	p, err := kafkapub.New(cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() { _ = p.Close() })
	return p
}

func msg(topic string, id int64, key string, value []byte) outbox.Message {
	return outbox.Message{
		ID: id, Topic: topic, Key: []byte(key), Value: value,
		Headers: []outbox.Header{
			{Key: "id", Value: []byte(strconv.FormatInt(id, 10))},
			{Key: "key", Value: []byte(key)},
		},
	}
}

func header(m kafka.Message, key string) []byte {
	for _, h := range m.Headers {
		if h.Key == key {
			return h.Value
		}
	}
	return nil
}

func TestNewValidates(t *testing.T) {
	if _, err := kafkapub.New(kafkapub.Config{}); err == nil {
		t.Fatal("New without brokers succeeded")
	}
}

// TestPublishConsume publishes 10k messages over 500 keys in several calls
// and reads them back in a consumer group: all arrive, each key in order on
// one partition, with headers.
func TestPublishConsume(t *testing.T) {
	b := startBroker(t, broker.Config{Partitions: 8})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const topic, total, keys, perCall = "events", 10000, 500, 1000
	if err := b.CreateTopic(ctx, topic, 8); err != nil {
		t.Fatal(err)
	}
	// BatchSize 300 splits each 1000-message call into chunks.
	p := newPublisher(t, kafkapub.Config{Brokers: []string{b.Addr()}, BatchSize: 300})

	for start := 0; start < total; start += perCall {
		batch := make([]outbox.Message, 0, perCall)
		for i := start; i < start+perCall; i++ {
			batch = append(batch, msg(topic, int64(i), fmt.Sprintf("key-%d", i%keys), fmt.Appendf(nil, "value-%d", i)))
		}
		if err := p.Publish(ctx, batch); err != nil {
			t.Fatalf("Publish at %d: %v", start, err)
		}
	}

	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:        []string{b.Addr()},
		GroupID:        "check",
		Topic:          topic,
		StartOffset:    kafka.FirstOffset,
		CommitInterval: time.Second,
		MaxWait:        100 * time.Millisecond,
	})
	defer r.Close()
	lastID := map[string]int64{}
	partOf := map[string]int{}
	seen := make([]bool, total)
	for n := 0; n < total; n++ {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("ReadMessage after %d messages: %v", n, err)
		}
		id, err := strconv.ParseInt(string(header(m, "id")), 10, 64)
		if err != nil {
			t.Fatalf("bad id header in %+v", m.Headers)
		}
		key := string(m.Key)
		if string(header(m, "key")) != key || string(m.Value) != fmt.Sprintf("value-%d", id) || key != fmt.Sprintf("key-%d", id%keys) {
			t.Fatalf("message %d does not match: key %q value %q headers %+v", id, key, m.Value, m.Headers)
		}
		if seen[id] {
			t.Fatalf("message %d delivered twice", id)
		}
		seen[id] = true
		if prev, ok := lastID[key]; ok && id <= prev {
			t.Fatalf("key %s: message %d after %d", key, id, prev)
		}
		lastID[key] = id
		if part, ok := partOf[key]; ok && part != m.Partition {
			t.Fatalf("key %s on partitions %d and %d", key, part, m.Partition)
		}
		partOf[key] = m.Partition
	}
	if len(lastID) != keys {
		t.Fatalf("saw %d keys, want %d", len(lastID), keys)
	}
	parts := map[int]bool{}
	for _, part := range partOf {
		parts[part] = true
	}
	if len(parts) != 8 {
		t.Fatalf("keys used %d partitions, want 8", len(parts))
	}
}

// TestTooLargeLocal: a message over MaxMessageBytes is refused without
// network, permanently, and the others of the call are acknowledged.
func TestTooLargeLocal(t *testing.T) {
	b := startBroker(t, broker.Config{Topics: []string{"t"}})
	p := newPublisher(t, kafkapub.Config{Brokers: []string{b.Addr()}, MaxMessageBytes: 10_000})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msgs := []outbox.Message{
		msg("t", 1, "k", []byte("small")),
		msg("t", 2, "k", bytes.Repeat([]byte("x"), 20_000)),
		msg("t", 3, "k", []byte("small")),
		msg("bad topic!", 4, "k", []byte("small")),
		msg("t", 5, "other", []byte("small")),
	}
	err := p.Publish(ctx, msgs)
	if !errors.Is(err, relay.ErrPermanent) {
		t.Fatalf("err = %v, want ErrPermanent", err)
	}
	var be *relay.BatchError
	if !errors.As(err, &be) || len(be.Errs) != len(msgs) {
		t.Fatalf("err = %#v, want *relay.BatchError of %d", err, len(msgs))
	}
	for i, e := range be.Errs {
		wantFail := i == 1 || i == 3
		if (e != nil) != wantFail {
			t.Errorf("Errs[%d] = %v", i, e)
		}
		if wantFail && !errors.Is(e, relay.ErrPermanent) {
			t.Errorf("Errs[%d] = %v, not permanent", i, e)
		}
	}
	if !errors.Is(be.Errs[1], kafka.MessageSizeTooLarge) || !errors.Is(be.Errs[3], kafka.InvalidTopic) {
		t.Errorf("Errs = %v", be.Errs)
	}
}

// TestTooLargeBroker: with MaxMessageBytes above the broker's limit, the
// broker refuses the partition batch; the publisher finds the one message
// that is too large on its own.
func TestTooLargeBroker(t *testing.T) {
	b := startBroker(t, broker.Config{Topics: []string{"t"}})
	p := newPublisher(t, kafkapub.Config{Brokers: []string{b.Addr()}, MaxMessageBytes: 4 << 20})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msgs := []outbox.Message{
		msg("t", 1, "k", []byte("first")),
		msg("t", 2, "k", bytes.Repeat([]byte("x"), 2<<20)),
		msg("t", 3, "k", []byte("third")),
	}
	err := p.Publish(ctx, msgs)
	var be *relay.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("err = %v, want *relay.BatchError", err)
	}
	if be.Errs[0] != nil || be.Errs[2] != nil || !errors.Is(be.Errs[1], relay.ErrPermanent) || !errors.Is(be.Errs[1], kafka.MessageSizeTooLarge) {
		t.Fatalf("Errs = %v", be.Errs)
	}
	// The two small ones are on the partition, in order.
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{b.Addr()}, GroupID: "g", Topic: "t", CommitInterval: time.Second, MaxWait: 50 * time.Millisecond})
	defer r.Close()
	for _, want := range []string{"first", "third"} {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if string(m.Value) != want {
			t.Fatalf("got %q, want %q", m.Value, want)
		}
	}
}

// TestBrokerDown: Publish returns an error, within its deadline, when the
// broker has gone away or was never there.
func TestBrokerDown(t *testing.T) {
	b := startBroker(t, broker.Config{Topics: []string{"t"}})
	p := newPublisher(t, kafkapub.Config{Brokers: []string{b.Addr()}, WriteTimeout: time.Second})
	ctx := context.Background()
	if err := p.Publish(ctx, []outbox.Message{msg("t", 1, "k", []byte("v"))}); err != nil {
		t.Fatal(err)
	}
	addr := b.Addr()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, p *kafkapub.Publisher) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		start := time.Now()
		err := p.Publish(ctx, []outbox.Message{msg("t", 2, "k", []byte("v")), msg("t", 3, "j", []byte("v"))})
		took := time.Since(start)
		if err == nil {
			t.Fatal("Publish to a closed broker succeeded")
		}
		if errors.Is(err, relay.ErrPermanent) {
			t.Fatalf("broker down reported as permanent: %v", err)
		}
		if took > 3500*time.Millisecond {
			t.Fatalf("Publish took %v, past its 3s deadline", took)
		}
		t.Logf("after %v: %v", took.Round(time.Millisecond), err)
	}
	t.Run("closed", func(t *testing.T) { check(t, p) })
	t.Run("never", func(t *testing.T) {
		check(t, newPublisher(t, kafkapub.Config{Brokers: []string{addr}, WriteTimeout: time.Second}))
	})
}

// TestAutoCreate: a missing topic is created with Config.Partitions, not
// the broker's default.
func TestAutoCreate(t *testing.T) {
	b := startBroker(t, broker.Config{Partitions: 3})
	p := newPublisher(t, kafkapub.Config{Brokers: []string{b.Addr()}, AutoCreateTopics: true, Partitions: 8})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 3 {
		// The second topic already exists: created behind the
		// publisher's back, which must count as success.
		if i == 1 {
			if err := b.CreateTopic(ctx, "made-1", 8); err != nil {
				t.Fatal(err)
			}
		}
		topic := fmt.Sprintf("made-%d", i)
		var msgs []outbox.Message
		for k := range 50 {
			msgs = append(msgs, msg(topic, int64(k), fmt.Sprint("k", k), []byte("v")))
		}
		if err := p.Publish(ctx, msgs); err != nil {
			t.Fatalf("Publish to %s: %v", topic, err)
		}
		if n, _ := b.TopicPartitions(topic); n != 8 {
			t.Fatalf("%s has %d partitions, want 8", topic, n)
		}
	}
}

// TestMissingTopic: without auto-creation, a missing topic is transient at
// first (the metadata cache may be stale), then permanent; other topics of
// the same call are written.
func TestMissingTopic(t *testing.T) {
	b := startBroker(t, broker.Config{Topics: []string{"there"}})
	p := newPublisher(t, kafkapub.Config{Brokers: []string{b.Addr()}, MetadataTTL: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msgs := []outbox.Message{msg("missing", 1, "k", []byte("v")), msg("there", 2, "k", []byte("v"))}
	err := p.Publish(ctx, msgs)
	var be *relay.BatchError
	if !errors.As(err, &be) || be.Errs[0] == nil || be.Errs[1] != nil {
		t.Fatalf("err = %v", err)
	}
	if errors.Is(err, relay.ErrPermanent) {
		t.Fatalf("first miss is permanent: %v", err)
	}
	time.Sleep(250 * time.Millisecond)
	err = p.Publish(ctx, msgs[:1])
	if !errors.Is(err, relay.ErrPermanent) || !errors.Is(err, kafka.UnknownTopicOrPartition) {
		t.Fatalf("err = %v, want permanent unknown topic", err)
	}
	if n, _ := b.TopicPartitions("missing"); n != 0 {
		t.Fatalf("missing topic was created with %d partitions", n)
	}
}

func TestContextAndClose(t *testing.T) {
	b := startBroker(t, broker.Config{Topics: []string{"t"}})
	p := newPublisher(t, kafkapub.Config{Brokers: []string{b.Addr()}})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Publish(ctx, []outbox.Message{msg("t", 1, "k", nil)}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Publish: %v", err)
	}
	if err := p.Publish(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := p.Publish(context.Background(), []outbox.Message{msg("t", 1, "k", nil)}); !errors.Is(err, kafkapub.ErrClosed) {
		t.Fatalf("Publish after Close: %v", err)
	}
}

// BenchmarkPublish publishes batches of 1000 ~250-byte messages (500 keys,
// 8 partitions, in-process broker) and waits for each, as the relay does.
func BenchmarkPublish(b *testing.B) {
	br := startBroker(b, broker.Config{Partitions: 8, Topics: []string{"bench"}})
	p := newPublisher(b, kafkapub.Config{Brokers: []string{br.Addr()}})
	ctx := context.Background()
	const n = 1000
	batch := make([]outbox.Message, n)
	value := bytes.Repeat([]byte("v"), 200)
	for i := range batch {
		batch[i] = msg("bench", int64(i), fmt.Sprintf("key-%03d", i%500), value)
	}
	if err := p.Publish(ctx, batch); err != nil { // warm up: connect, metadata
		b.Fatal(err)
	}
	b.SetBytes(int64(n * 250))
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if err := p.Publish(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*n)/time.Since(start).Seconds(), "msgs/s")
}

// TestUnresponsiveBroker: a broker that accepts connections but never
// answers does not hold Publish past its deadline.
func TestUnresponsiveBroker(t *testing.T) {
	var lc net.ListenConfig
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	p := newPublisher(t, kafkapub.Config{Brokers: []string{ln.Addr().String()}, WriteTimeout: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = p.Publish(ctx, []outbox.Message{msg("t", 1, "k", []byte("v"))})
	if err == nil {
		t.Fatal("Publish succeeded")
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("Publish took %v past a 500ms deadline", took)
	}
}

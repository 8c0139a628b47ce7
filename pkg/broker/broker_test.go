package broker_test

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/esflow/esflow/pkg/broker"
)

func start(t *testing.T, cfg broker.Config) *broker.Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := broker.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func TestRejectsNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "10.1.2.3:9092", "example.com:9092", "[::]:0", "nonsense"} {
		b, err := broker.Start(context.Background(), broker.Config{Addr: addr})
		if err == nil {
			_ = b.Close()
			t.Errorf("Start(%q) succeeded, want error", addr)
		}
	}
}

func TestAddrAndClose(t *testing.T) {
	b := start(t, broker.Config{Addr: "localhost:0"})
	if !strings.HasPrefix(b.Addr(), "127.0.0.1:") || strings.HasSuffix(b.Addr(), ":0") {
		t.Fatalf("Addr = %q, want 127.0.0.1:<port>", b.Addr())
	}
	// The advertised broker address equals Addr.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(b.Addr()), Transport: tr}
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{})
	if err != nil {
		t.Fatalf("Metadata: %v", err)
	}
	if len(md.Brokers) != 1 || fmt.Sprintf("%s:%d", md.Brokers[0].Host, md.Brokers[0].Port) != b.Addr() {
		t.Fatalf("advertised brokers %+v, want one at %s", md.Brokers, b.Addr())
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := b.CreateTopic(ctx, "x", 1); err == nil {
		t.Fatal("CreateTopic after Close succeeded")
	}
}

func TestCreateTopic(t *testing.T) {
	b := start(t, broker.Config{Partitions: 3, Topics: []string{"seeded"}})
	ctx := context.Background()
	if n, _ := b.TopicPartitions("seeded"); n != 3 {
		t.Fatalf("seeded topic has %d partitions, want 3", n)
	}
	if err := b.CreateTopic(ctx, "made", 5); err != nil {
		t.Fatal(err)
	}
	if err := b.CreateTopic(ctx, "made", 5); err != nil {
		t.Fatalf("second CreateTopic: %v", err)
	}
	if n, _ := b.TopicPartitions("made"); n != 5 {
		t.Fatalf("topic has %d partitions, want 5", n)
	}
	if err := b.CreateTopic(ctx, "dflt", 0); err != nil {
		t.Fatal(err)
	}
	if n, _ := b.TopicPartitions("dflt"); n != 3 {
		t.Fatalf("default topic has %d partitions, want 3", n)
	}
}

// TestProduceConsume writes keyed messages with headers to a topic the
// broker creates on demand and reads them back in a consumer group.
func TestProduceConsume(t *testing.T) {
	b := start(t, broker.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	const topic, n = "orders", 200
	w := &kafka.Writer{
		Addr:                   kafka.TCP(b.Addr()),
		Topic:                  topic,
		Balancer:               kafka.Murmur2Balancer{},
		RequiredAcks:           kafka.RequireAll,
		AllowAutoTopicCreation: true,
		BatchSize:              1000,
		BatchTimeout:           time.Millisecond,
		Transport:              &kafka.Transport{},
	}
	defer w.Close()
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		msgs[i] = kafka.Message{
			Key:     fmt.Appendf(nil, "key-%d", i%10),
			Value:   fmt.Appendf(nil, "value-%d", i),
			Headers: []kafka.Header{{Key: "seq", Value: fmt.Appendf(nil, "%d", i)}},
		}
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("WriteMessages: %v", err)
	}
	if got, _ := b.TopicPartitions(topic); got != broker.DefaultPartitions {
		t.Fatalf("auto-created topic has %d partitions, want %d", got, broker.DefaultPartitions)
	}

	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:        []string{b.Addr()},
		GroupID:        "test-group",
		Topic:          topic,
		StartOffset:    kafka.FirstOffset,
		CommitInterval: time.Second,
		MaxWait:        100 * time.Millisecond,
	})
	defer r.Close()
	last := map[string]int{}
	seen := 0
	for seen < n {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("ReadMessage after %d: %v", seen, err)
		}
		var seq int
		if len(m.Headers) != 1 || m.Headers[0].Key != "seq" {
			t.Fatalf("headers = %+v", m.Headers)
		}
		fmt.Sscanf(string(m.Headers[0].Value), "%d", &seq)
		if string(m.Value) != fmt.Sprintf("value-%d", seq) || string(m.Key) != fmt.Sprintf("key-%d", seq%10) {
			t.Fatalf("message %q/%q does not match header seq %d", m.Key, m.Value, seq)
		}
		if prev, ok := last[string(m.Key)]; ok && seq <= prev {
			t.Fatalf("key %s: seq %d after %d", m.Key, seq, prev)
		}
		last[string(m.Key)] = seq
		seen++
	}
}

// TestKcat checks the broker with librdkafka's kcat, when installed.
func TestKcat(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Skip("kcat not installed")
	}
	b := start(t, broker.Config{Topics: []string{"kc"}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	w := &kafka.Writer{
		Addr: kafka.TCP(b.Addr()), Topic: "kc", Balancer: kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, Transport: &kafka.Transport{},
	}
	defer w.Close()
	err = w.WriteMessages(ctx,
		kafka.Message{Key: []byte("k1"), Value: []byte("v1"), Headers: []kafka.Header{{Key: "h1", Value: []byte("x1")}}},
		kafka.Message{Key: []byte("k2"), Value: []byte("v2"), Headers: []kafka.Header{{Key: "h2", Value: []byte("x2")}}},
	)
	if err != nil {
		t.Fatal(err)
	}

	out, err := exec.CommandContext(ctx, kcat, "-b", b.Addr(), "-L").CombinedOutput()
	if err != nil {
		t.Fatalf("kcat -L: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte(`topic "kc" with 8 partitions`)) || !bytes.Contains(out, []byte(b.Addr())) {
		t.Fatalf("kcat -L output lacks topic or broker address:\n%s", out)
	}

	out, err = exec.CommandContext(ctx, kcat, "-b", b.Addr(), "-C", "-t", "kc", "-e", "-q", "-f", `%k %h\n`).CombinedOutput()
	if err != nil {
		t.Fatalf("kcat -C: %v\n%s", err, out)
	}
	for _, want := range []string{"k1 h1=x1", "k2 h2=x2"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("kcat -C output lacks %q:\n%s", want, out)
		}
	}
}

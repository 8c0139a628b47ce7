package kafkapub_test

import (
	"bytes"
	"context"
	"encoding/json"

	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/binding/format"
	"github.com/cloudevents/sdk-go/v2/binding/spec"
	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/broker"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/relay/kafkapub"
)

// ceMessage is a Kafka record as a CloudEvents binding.Message: the
// CloudEvents Kafka protocol binding's reading rules (binary mode when
// ce_specversion is present, attributes from ce_* headers, datacontenttype
// from content-type, data the value), with the SDK's spec package deciding
// which header is which attribute. The SDK's own Kafka bindings need the
// sarama or confluent clients; this adapter needs neither.
type ceMessage struct {
	headers map[string][]byte
	value   []byte
	version spec.Version
}

var ceSpecs = spec.WithPrefix("ce_")

func newCEMessage(m kafka.Message) *ceMessage {
	c := &ceMessage{headers: map[string][]byte{}, value: m.Value}
	for _, h := range m.Headers {
		c.headers[strings.ToLower(h.Key)] = h.Value
	}
	if v, ok := c.headers[ceSpecs.PrefixedSpecVersionName()]; ok {
		c.version = ceSpecs.Version(string(v))
	}
	return c
}

func (m *ceMessage) ReadEncoding() binding.Encoding {
	if m.version != nil {
		return binding.EncodingBinary
	}
	if format.Lookup(string(m.headers["content-type"])) != nil {
		return binding.EncodingStructured
	}
	return binding.EncodingUnknown
}

func (m *ceMessage) ReadStructured(ctx context.Context, w binding.StructuredWriter) error {
	f := format.Lookup(string(m.headers["content-type"]))
	if m.version != nil || f == nil {
		return binding.ErrNotStructured
	}
	return w.SetStructuredEvent(ctx, f, bytes.NewReader(m.value))
}

func (m *ceMessage) ReadBinary(_ context.Context, w binding.BinaryWriter) error {
	if m.version == nil {
		return binding.ErrNotBinary
	}
	for k, v := range m.headers {
		switch {
		case k == "content-type":
			if err := w.SetAttribute(m.version.AttributeFromKind(spec.DataContentType), string(v)); err != nil {
				return err
			}
		case strings.HasPrefix(k, m.version.Prefix()):
			if attr := m.version.Attribute(k); attr != nil {
				if err := w.SetAttribute(attr, string(v)); err != nil {
					return err
				}
			} else if err := w.SetExtension(strings.TrimPrefix(k, m.version.Prefix()), string(v)); err != nil {
				return err
			}
		}
	}
	if m.value != nil {
		return w.SetData(bytes.NewReader(m.value))
	}
	return nil
}

func (m *ceMessage) GetAttribute(k spec.Kind) (spec.Attribute, any) {
	attr := m.version.AttributeFromKind(k)
	if attr == nil {
		return nil, nil
	}
	if k == spec.DataContentType {
		return attr, string(m.headers["content-type"])
	}
	if v, ok := m.headers[attr.PrefixedName()]; ok {
		return attr, string(v)
	}
	return attr, nil
}

func (m *ceMessage) GetExtension(name string) any {
	if v, ok := m.headers[m.version.Prefix()+name]; ok {
		return string(v)
	}
	return nil
}

func (m *ceMessage) Finish(error) error { return nil }

var _ binding.MessageMetadataReader = (*ceMessage)(nil)

// TestCloudEvents publishes a domain event's outbox message and reads it
// back through the CloudEvents SDK: every attribute of the binding is
// there with the event's values, the data is the esflow envelope, and the
// esflow-* headers are unchanged. With the headers disabled the same
// message is no CloudEvent.
func TestCloudEvents(t *testing.T) {
	b := startBroker(t, broker.Config{Partitions: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	e := aggregate.Event{
		ID: uuid.New(), AggregateID: uuid.New(), AggregateType: "World", Version: 2, Type: "SomethingHappened",
		Time: time.Date(2026, 11, 22, 5, 40, 0, 123456000, time.UTC), Payload: map[string]string{"what": "dinosaurs"},
		Metadata: aggregate.Metadata{CorrelationID: "c-1"},
	}
	if err := aggregate.Seal(&e); err != nil {
		t.Fatal(err)
	}
	m, err := (&outbox.Builder{}).Message(e, nil, nil, false)
	if err != nil {
		t.Fatal(err)
	}

	read := func(t *testing.T, cfg kafkapub.CloudEvents, topic string) kafka.Message {
		t.Helper()
		if err := b.CreateTopic(ctx, topic, 1); err != nil {
			t.Fatal(err)
		}
		p := newPublisher(t, kafkapub.Config{Brokers: []string{b.Addr()}, CloudEvents: cfg})
		mm := m
		mm.Topic = topic
		if err := p.Publish(ctx, []outbox.Message{mm}); err != nil {
			t.Fatal(err)
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{b.Addr()}, Topic: topic, Partition: 0, MaxWait: 100 * time.Millisecond})
		defer r.Close()
		got, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}

	t.Run("on", func(t *testing.T) {
		got := read(t, kafkapub.CloudEvents{Source: "/services/worlds"}, "ce-on")
		msg := newCEMessage(got)
		if enc := msg.ReadEncoding(); enc != binding.EncodingBinary {
			t.Fatalf("encoding %v, want binary; headers %v", enc, got.Headers)
		}
		ev, err := binding.ToEvent(ctx, msg)
		if err != nil {
			t.Fatalf("binding.ToEvent: %v", err)
		}
		if err := ev.Validate(); err != nil {
			t.Fatalf("event does not validate: %v", err)
		}
		checks := []struct{ what, got, want string }{
			{"specversion", ev.SpecVersion(), "1.0"},
			{"id", ev.ID(), e.ID.String()},
			{"source", ev.Source(), "/services/worlds"},
			{"type", ev.Type(), e.Type},
			{"subject", ev.Subject(), e.AggregateID.String()},
			{"datacontenttype", ev.DataContentType(), outbox.ContentTypeJSON},
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
			}
		}
		if !ev.Time().Equal(e.Time) {
			t.Errorf("time = %v, want %v", ev.Time(), e.Time)
		}
		if exts := ev.Extensions(); len(exts) != 0 {
			t.Errorf("unexpected extensions %v", exts)
		}
		env, err := outbox.DecodeEnvelope(ev.Data())
		if err != nil {
			t.Fatalf("data is not the envelope: %v", err)
		}
		if env.EventID != e.ID || env.Hash != e.Hash || !json.Valid(env.Payload) {
			t.Errorf("envelope %+v does not match the event", env)
		}
		if string(header(got, outbox.HeaderEventID)) != e.ID.String() || string(header(got, outbox.HeaderCorrelationID)) != "c-1" {
			t.Errorf("esflow headers changed: %v", got.Headers)
		}
	})

	t.Run("default source", func(t *testing.T) {
		got := read(t, kafkapub.CloudEvents{}, "ce-default")
		ev, err := binding.ToEvent(ctx, newCEMessage(got))
		if err != nil {
			t.Fatal(err)
		}
		if ev.Source() != kafkapub.DefaultCloudEventsSource {
			t.Errorf("source %q, want %q", ev.Source(), kafkapub.DefaultCloudEventsSource)
		}
	})

	t.Run("off", func(t *testing.T) {
		got := read(t, kafkapub.CloudEvents{Disabled: true}, "ce-off")
		for _, h := range got.Headers {
			if strings.HasPrefix(h.Key, "ce_") {
				t.Errorf("header %s written with CloudEvents disabled", h.Key)
			}
		}
		if _, err := binding.ToEvent(ctx, newCEMessage(got)); err == nil {
			t.Error("the SDK read a CloudEvent from a message without ce_ headers")
		}
		if string(header(got, outbox.HeaderEventID)) != e.ID.String() {
			t.Errorf("esflow headers missing: %v", got.Headers)
		}
	})
}

// BenchmarkPublishEvents is BenchmarkPublish with domain events' outbox
// messages (the standard esflow-* headers, ~300-byte envelopes), with the
// CloudEvents headers on and off: what the ce_* headers cost the relay.
func BenchmarkPublishEvents(b *testing.B) {
	for _, on := range []bool{true, false} {
		name := "cloudevents=on"
		if !on {
			name = "cloudevents=off"
		}
		b.Run(name, func(b *testing.B) {
			br := startBroker(b, broker.Config{Partitions: 8, Topics: []string{"esflow.World"}})
			p := newPublisher(b, kafkapub.Config{Brokers: []string{br.Addr()}, CloudEvents: kafkapub.CloudEvents{Disabled: !on}})
			ctx := context.Background()
			const n = 1000
			builder := &outbox.Builder{}
			batch := make([]outbox.Message, n)
			aggs := make([]uuid.UUID, 500)
			for i := range aggs {
				aggs[i] = uuid.New()
			}
			size := 0
			for i := range batch {
				e := aggregate.Event{ID: uuid.New(), AggregateID: aggs[i%500], AggregateType: "World", Version: uint64(i / 500),
					Type: "SomethingHappened", Time: time.Now(), Payload: map[string]string{"what": strings.Repeat("x", 40)}}
				if err := aggregate.Seal(&e); err != nil {
					b.Fatal(err)
				}
				m, err := builder.Message(e, nil, nil, false)
				if err != nil {
					b.Fatal(err)
				}
				batch[i] = m
				size += len(m.Value)
			}
			if err := p.Publish(ctx, batch); err != nil { // warm up: connect, metadata
				b.Fatal(err)
			}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				if err := p.Publish(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*n)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}

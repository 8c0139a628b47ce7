package outbox_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/esflow/esflow/examples/domain"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/outbox"
)

func world(t *testing.T) *domain.World {
	t.Helper()
	w, err := domain.NewWorld("gods", aggregate.WithMetadata(aggregate.Metadata{
		CorrelationID: "corr", CausationID: "cause", Values: map[string]string{"traceparent": "00-abc-def-01"},
	}))
	if err != nil {
		t.Fatal(err)
	}
	w.MakeItSo("dinosaurs")
	return w
}

func TestBuilderEnvelopeAndHeaders(t *testing.T) {
	t.Parallel()
	reg := aggregate.NewRegistry()
	domain.Register(reg)
	w := world(t)
	events := w.PendingEvents()
	b := &outbox.Builder{Registry: reg}
	msgs, err := b.Messages(events, [][]byte{[]byte("x"), []byte("y")}, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 {
		t.Fatalf("%d messages", len(msgs))
	}
	m := msgs[1]
	if m.Topic != "esflow.World" || string(m.Key) != w.ID().String() {
		t.Errorf("topic %q key %q", m.Topic, m.Key)
	}
	env, err := outbox.DecodeEnvelope(m.Value)
	if err != nil {
		t.Fatal(err)
	}
	e := events[1]
	if env.EventID != e.ID || env.EventType != "SomethingHappened" || env.AggregateID != w.ID() || env.AggregateType != "World" ||
		env.AggregateVersion != 1 || !env.Timestamp.Equal(e.Time) || env.Hash != e.Hash || env.PreviousHash != events[0].Hash || env.SchemaVersion != 1 {
		t.Errorf("envelope = %+v", env)
	}
	var p domain.SomethingHappened
	if err := json.Unmarshal(env.Payload, &p); err != nil || p.What != "dinosaurs" {
		t.Errorf("payload %s", env.Payload)
	}
	want := map[string]string{
		outbox.HeaderEventID: e.ID.String(), outbox.HeaderEventType: "SomethingHappened",
		outbox.HeaderAggregateID: w.ID().String(), outbox.HeaderAggregateType: "World", outbox.HeaderAggregateVersion: "1",
		outbox.HeaderContentType: outbox.ContentTypeJSON, outbox.HeaderTimestamp: e.Time.UTC().Format(aggregate.TimeFormat),
	}
	for k, v := range want {
		if got := string(m.Header(k)); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	// Metadata set at creation travels with the first event.
	first := msgs[0]
	if string(first.Header(outbox.HeaderCorrelationID)) != "corr" || string(first.Header(outbox.HeaderCausationID)) != "cause" ||
		string(first.Header("traceparent")) != "00-abc-def-01" {
		t.Errorf("trace headers missing: %v", first.Headers)
	}
}

func TestBuilderKeepEncrypted(t *testing.T) {
	t.Parallel()
	w := world(t)
	b := &outbox.Builder{KeepEncrypted: true}
	stored := [][]byte{[]byte("ciphertext-0"), []byte("ciphertext-1")}
	msgs, err := b.Messages(w.PendingEvents(), stored, true)
	if err != nil {
		t.Fatal(err)
	}
	env, _ := outbox.DecodeEnvelope(msgs[1].Value)
	if string(env.Encrypted) != "ciphertext-1" || env.Payload != nil || strings.Contains(string(msgs[1].Value), "dinosaurs") {
		t.Errorf("encrypted envelope leaks or lacks data: %s", msgs[1].Value)
	}
	if string(msgs[1].Header(outbox.HeaderContentType)) != outbox.ContentTypeEncrypted {
		t.Errorf("content type %s", msgs[1].Header(outbox.HeaderContentType))
	}
	// Without encryption at rest there is nothing to keep encrypted.
	plain, _ := b.Messages(w.PendingEvents(), stored, false)
	if env, _ := outbox.DecodeEnvelope(plain[1].Value); env.Payload == nil {
		t.Errorf("plain store published no payload")
	}
}

func TestRouter(t *testing.T) {
	t.Parallel()
	e := aggregate.Event{AggregateType: "World", Type: "SomethingHappened"}
	for _, tc := range []struct {
		name   string
		router outbox.Router
		want   string
	}{
		{"default", outbox.Router{}, "esflow.World"},
		{"prefix", outbox.Router{Prefix: "prod-"}, "prod-World"},
		{"aggregate route", outbox.Router{AggregateTopics: map[string]string{"World": "worlds"}}, "worlds"},
		{"event route wins", outbox.Router{AggregateTopics: map[string]string{"World": "worlds"}, EventTopics: map[string]string{"SomethingHappened": "happenings"}}, "happenings"},
	} {
		if got, err := tc.router.Topic(e); err != nil || got != tc.want {
			t.Errorf("%s: %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	for _, bad := range []string{"has space", "", "..", strings.Repeat("x", 250), "slash/topic"} {
		r := outbox.Router{AggregateTopics: map[string]string{"World": bad}}
		if _, err := r.Topic(e); !errors.Is(err, outbox.ErrUnroutable) {
			t.Errorf("topic %q: %v, want ErrUnroutable", bad, err)
		}
	}
}

func TestShard(t *testing.T) {
	t.Parallel()
	counts := make([]int, 4)
	for i := range 1000 {
		h := outbox.KeyHash([]byte{byte(i), byte(i >> 8)})
		if h < 0 {
			t.Fatal("negative key hash")
		}
		n := 0
		for s := range 4 {
			if (outbox.Shard{Index: s, Count: 4}).Contains(h) {
				counts[s]++
				n++
			}
		}
		if n != 1 {
			t.Fatalf("key in %d shards", n)
		}
	}
	for s, c := range counts {
		if c < 150 {
			t.Errorf("shard %d got %d of 1000 keys", s, c)
		}
	}
	if !(outbox.Shard{}).Valid() || (outbox.Shard{Index: 4, Count: 4}).Valid() || (outbox.Shard{Index: 1, Count: 1}).Valid() {
		t.Errorf("Shard.Valid wrong")
	}
	if _, err := outbox.DecodeEnvelope([]byte(`{"event_type":"X"}`)); err == nil {
		t.Errorf("envelope without ids accepted")
	}
}

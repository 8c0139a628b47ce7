package outbox

import (
	"math/rand/v2"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/aggregate"
)

// TestLegalTopicMatchesRegexp: the hand-written check accepts exactly
// what Kafka's topic rule, written as a regexp, accepts.
func TestLegalTopicMatchesRegexp(t *testing.T) {
	rule := regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)
	check := func(s string) {
		want := rule.MatchString(s) && s != "." && s != ".."
		if got := legalTopic(s); got != want {
			t.Fatalf("legalTopic(%q) = %v, want %v", s, got, want)
		}
	}
	for _, s := range []string{"", ".", "..", "...", "a", "esflow.World", "a b", "a/b", "é", "x\x00",
		strings.Repeat("x", 249), strings.Repeat("x", 250), "A-Z_a.z-09"} {
		check(s)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 20000 {
		b := make([]byte, rng.IntN(12))
		for i := range b {
			b[i] = byte(rng.IntN(128))
			if rng.IntN(4) > 0 {
				b[i] = "az.-_09AZ"[rng.IntN(9)]
			}
		}
		check(string(b))
	}
}

type builderThing struct {
	What string `json:"what"`
}

// TestMessageWithPayloadMatchesMessages: a message built from the
// already encoded payload is the one Messages builds.
func TestMessageWithPayloadMatchesMessages(t *testing.T) {
	reg := aggregate.NewRegistry()
	e := aggregate.Event{
		ID: uuid.New(), AggregateID: uuid.New(), AggregateType: "World", Version: 12, Type: "builderThing",
		Time: time.Date(2026, 11, 22, 5, 40, 0, 123456000, time.UTC), Payload: &builderThing{What: "<dinosaurs>"},
		Metadata: aggregate.Metadata{CorrelationID: "c", Values: map[string]string{"baggage": "b", "tracestate": "s", "other": "o"}},
	}
	payload, err := aggregate.MarshalPayload(e.Payload)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []*Builder{{}, {Registry: reg}, {KeepEncrypted: true}} {
		for _, encrypted := range []bool{false, true} {
			want, err := b.Messages([]aggregate.Event{e}, [][]byte{[]byte("stored")}, encrypted)
			if err != nil {
				t.Fatal(err)
			}
			got, err := b.Message(e, payload, []byte("stored"), encrypted)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want[0]) {
				t.Errorf("builder %+v encrypted %v:\n got %+v\nwant %+v", b, encrypted, got, want[0])
			}
		}
	}
	// Header values share one buffer: appending to one must not change
	// the next.
	m, _ := (&Builder{}).Message(e, payload, nil, false)
	_ = append(m.Headers[0].Value, "xxxxxxxx"...)
	if string(m.Headers[1].Value) != "builderThing" {
		t.Errorf("header values overlap: %q", m.Headers[1].Value)
	}
}

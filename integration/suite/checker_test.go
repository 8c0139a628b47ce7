package suite

import (
	"encoding/json"
	"testing"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/esflow/esflow/pkg/outbox"
)

// The checker must catch what the suite claims to check, so that the
// fault suite cannot pass vacuously.
func TestTopicCheckerDetects(t *testing.T) {
	a, b := uuid.New(), uuid.New()
	msg := func(t *testing.T, partition int, key, id uuid.UUID, v uint64) kafka.Message {
		t.Helper()
		value, err := json.Marshal(outbox.Envelope{EventID: uuid.New(), EventType: "SomethingHappened",
			AggregateID: id, AggregateType: "World", AggregateVersion: v, SchemaVersion: 1,
			Payload: json.RawMessage(`{}`)})
		if err != nil {
			t.Fatal(err)
		}
		return kafka.Message{Partition: partition, Key: []byte(key.String()), Value: value}
	}
	for _, tc := range []struct {
		name                 string
		msgs                 func(t *testing.T) []kafka.Message
		duplicates, problems int
		prefixA              uint64
	}{
		{"in order", func(t *testing.T) []kafka.Message {
			return []kafka.Message{msg(t, 1, a, a, 0), msg(t, 2, b, b, 0), msg(t, 1, a, a, 1), msg(t, 1, a, a, 2)}
		}, 0, 0, 3},
		{"re-sent batch counts duplicates, not disorder", func(t *testing.T) []kafka.Message {
			return []kafka.Message{msg(t, 1, a, a, 0), msg(t, 1, a, a, 1), msg(t, 1, a, a, 0), msg(t, 1, a, a, 1), msg(t, 1, a, a, 2)}
		}, 2, 0, 3},
		{"later version first", func(t *testing.T) []kafka.Message {
			return []kafka.Message{msg(t, 1, a, a, 1), msg(t, 1, a, a, 0)}
		}, 0, 1, 2},
		{"gap", func(t *testing.T) []kafka.Message {
			return []kafka.Message{msg(t, 1, a, a, 0), msg(t, 1, a, a, 2)}
		}, 0, 1, 1},
		{"aggregate in two partitions", func(t *testing.T) []kafka.Message {
			return []kafka.Message{msg(t, 1, a, a, 0), msg(t, 3, a, a, 1)}
		}, 0, 1, 2},
		{"key is not the aggregate id", func(t *testing.T) []kafka.Message {
			return []kafka.Message{msg(t, 1, b, a, 0)}
		}, 0, 1, 1},
		{"not an envelope", func(t *testing.T) []kafka.Message {
			return []kafka.Message{{Partition: 0, Key: []byte("x"), Value: []byte("garbage")}}
		}, 0, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewTopicChecker("t", 4)
			c.next = map[int]int64{}
			for _, m := range tc.msgs(t) {
				c.record(m)
			}
			_, dups, problems, first := c.Stats()
			if dups != tc.duplicates || problems != tc.problems {
				t.Errorf("duplicates %d, problems %d %v; want %d, %d", dups, problems, first, tc.duplicates, tc.problems)
			}
			if got := c.Prefixes()[a]; got != tc.prefixA {
				t.Errorf("prefix of a = %d, want %d", got, tc.prefixA)
			}
		})
	}
}

func TestCovers(t *testing.T) {
	a, b := uuid.New(), uuid.New()
	want := map[uuid.UUID]uint64{a: 3, b: 1}
	if ok, short := Covers(map[uuid.UUID]uint64{a: 3, b: 2}, want); !ok || short != 0 {
		t.Errorf("covered: got %v, %d short", ok, short)
	}
	if ok, short := Covers(map[uuid.UUID]uint64{a: 2}, want); ok || short != 2 {
		t.Errorf("not covered: got %v, %d short; want false, 2", ok, short)
	}
}

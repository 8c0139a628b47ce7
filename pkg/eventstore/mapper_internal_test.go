package eventstore

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/aggregate"
)

// TestEnvelopeAppendJSONMatchesMarshal: the hand-written envelope encoder
// must produce exactly json.Marshal's bytes, whatever the strings hold.
func TestEnvelopeAppendJSONMatchesMarshal(t *testing.T) {
	payload := func(v any) json.RawMessage {
		b, err := aggregate.MarshalPayload(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := []envelope{
		{},
		{ID: uuid.New(), Time: "2026-11-22T05:40:00.123456Z", Payload: payload(map[string]any{"what": "dinosaurs"})},
		{ID: uuid.New(), AggregateType: "World", Schema: 3, Time: "t", PreviousHash: "p", Hash: "h", Payload: payload(struct{ A string }{"<b>&\"\\\u2028é"})},
		{ID: uuid.New(), AggregateType: "Wörld <&>", Schema: -1, Time: "\x01\t\"", Hash: "\\",
			Metadata: &aggregate.Metadata{CorrelationID: "c<", Values: map[string]string{"traceparent": "00-x"}}, Payload: payload(nil)},
		{ID: uuid.New(), AggregateType: "bad utf8 \xff", Time: "\u2029", Payload: payload([]int{1, 2})},
	}
	for i, env := range cases {
		want, err := json.Marshal(env)
		if err != nil {
			t.Fatal(err)
		}
		got, err := env.appendJSON(nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("case %d:\n got %s\nwant %s", i, got, want)
		}
	}
}

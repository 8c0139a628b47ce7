package outbox

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/aggregate"
)

// TestMarshalEnvelopeMatchesJSON: the hand-written encoder must produce
// exactly json.Marshal's bytes.
func TestMarshalEnvelopeMatchesJSON(t *testing.T) {
	now := time.Date(2026, 11, 22, 5, 40, 0, 123456000, time.UTC)
	cases := []Envelope{
		{},
		{EventID: uuid.New(), EventType: "SomethingHappened", AggregateID: uuid.New(), AggregateType: "World",
			AggregateVersion: 3, Timestamp: now, SchemaVersion: 1, PreviousHash: "p", Hash: "h",
			Payload: json.RawMessage(`{"what":"dinosaurs"}`)},
		{EventID: uuid.New(), EventType: "<&>\"\\é\u2028", AggregateType: "bad \xff", Timestamp: now.Truncate(time.Second),
			SchemaVersion: -2, Metadata: &aggregate.Metadata{CorrelationID: "c", Values: map[string]string{"traceparent": "00-<x>"}},
			Encrypted: []byte{0, 1, 2, 250, 251, 252, 253}},
		{Timestamp: now.In(time.FixedZone("x", 3600)), Encrypted: []byte{}},
		{Timestamp: time.Date(12000, 1, 1, 0, 0, 0, 0, time.UTC)}, // json.Marshal fails; so must we
	}
	for i, env := range cases {
		want, wantErr := json.Marshal(&env)
		got, err := marshalEnvelope(&env)
		if (err != nil) != (wantErr != nil) || !bytes.Equal(got, want) {
			t.Errorf("case %d:\n got %s, %v\nwant %s, %v", i, got, err, want, wantErr)
		}
	}
}

// TestFastEncodeHeadersMatchesJSON: EncodeHeaders' bytes are those of
// json.Marshal over the wire form, the format stored since the start.
func TestFastEncodeHeadersMatchesJSON(t *testing.T) {
	cases := [][]Header{
		{{Key: "a", Value: []byte("b")}},
		{{Key: "", Value: nil}, {Key: "k<&>\"é\xff", Value: []byte{0, 255, 1}}, {Key: "x", Value: []byte{}}},
		{{Key: HeaderEventID, Value: []byte(uuid.NewString())}, {Key: HeaderContentType, Value: []byte(ContentTypeJSON)}},
	}
	for i, hs := range cases {
		w := make([]wireHeader, len(hs))
		for j, h := range hs {
			w[j] = wireHeader{Key: h.Key, Value: h.Value}
			if w[j].Value == nil {
				w[j].Value = []byte{}
			}
		}
		want, err := json.Marshal(w)
		if err != nil {
			t.Fatal(err)
		}
		got, err := EncodeHeaders(hs)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("case %d:\n got %s, %v\nwant %s", i, got, err, want)
		}
		back, err := DecodeHeaders(got)
		if err != nil || len(back) != len(hs) {
			t.Errorf("case %d: decode: %v, %d headers", i, err, len(back))
		}
	}
}

package outbox

import (
	"bytes"
	"encoding/json"
	"reflect"
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

// TestHeadersRoundTrip: DecodeHeaders returns what EncodeHeaders was
// given, for awkward keys and values too, and its values do not alias
// the stored bytes; DecodeHeadersAlias's values do, capped at their
// length.
func TestHeadersRoundTrip(t *testing.T) {
	cases := [][]Header{
		{{Key: "a", Value: []byte("b")}},
		{{Key: "", Value: []byte{}}, {Key: "k<&>\"é\xff", Value: []byte{0, 255, 1}}, {Key: "x", Value: []byte{}}},
		{{Key: HeaderEventID, Value: []byte(uuid.NewString())}, {Key: HeaderContentType, Value: []byte(ContentTypeJSON)}},
		{{Key: "big", Value: bytes.Repeat([]byte{7}, 300)}},
	}
	for i, hs := range cases {
		b, err := EncodeHeaders(hs)
		if err != nil {
			t.Fatal(err)
		}
		back, err := DecodeHeaders(b)
		if err != nil || !reflect.DeepEqual(back, hs) {
			t.Errorf("case %d: DecodeHeaders = %q, %v; want %q", i, back, err, hs)
		}
		alias, err := DecodeHeadersAlias(nil, b)
		if err != nil || !reflect.DeepEqual(alias, hs) {
			t.Errorf("case %d: DecodeHeadersAlias = %q, %v; want %q", i, alias, err, hs)
		}
		for j := range b {
			b[j] = '#'
		}
		if !reflect.DeepEqual(back, hs) {
			t.Errorf("case %d: DecodeHeaders' result changed with its input", i)
		}
		if len(hs[len(hs)-1].Value) > 0 && reflect.DeepEqual(alias, hs) {
			t.Errorf("case %d: DecodeHeadersAlias' values do not alias its input", i)
		}
	}
	if hs, err := EncodeHeaders(nil); hs != nil || err != nil {
		t.Errorf("EncodeHeaders(nil) = %q, %v", hs, err)
	}
	b, _ := EncodeHeaders([]Header{{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte("2")}})
	hs, _ := DecodeHeadersAlias(nil, b)
	_ = append(hs[0].Value, 'x')
	if string(hs[1].Key) != "b" || string(hs[1].Value) != "2" {
		t.Errorf("appending to one value overwrote the next: %q", hs)
	}
}

// TestDecodeHeadersJSON: the stored form before the binary one, which an
// outbox may still hold after an upgrade, decodes as it always did.
func TestDecodeHeadersJSON(t *testing.T) {
	hs, err := DecodeHeaders([]byte(`[{"key":"event_id","value":"YWJj"},{"key":"k","value":""}]`))
	want := []Header{{Key: "event_id", Value: []byte("abc")}, {Key: "k", Value: []byte{}}}
	if err != nil || !reflect.DeepEqual(hs, want) {
		t.Errorf("DecodeHeaders(JSON) = %q, %v; want %q", hs, err, want)
	}
}

// TestDecodeHeadersRejects: corrupt stored headers are errors, never a
// panic or a partial result.
func TestDecodeHeadersRejects(t *testing.T) {
	good, _ := EncodeHeaders([]Header{{Key: "key", Value: []byte("value")}})
	for name, b := range map[string][]byte{
		"truncated":    good[:len(good)-1],
		"trailing":     append(append([]byte(nil), good...), 0),
		"huge count":   {headersBinary, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"huge field":   {headersBinary, 1, 0xff, 0x7f, 'k'},
		"bad varint":   {headersBinary, 0xff},
		"unknown form": {0x02, 0},
		"not json":     []byte("[garbage"),
	} {
		if hs, err := DecodeHeaders(b); err == nil {
			t.Errorf("%s: DecodeHeaders = %q, want an error", name, hs)
		}
	}
}

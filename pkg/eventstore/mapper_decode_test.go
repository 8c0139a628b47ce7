package eventstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/outbox"
)

type decodeThing struct {
	What  string         `json:"what"`
	N     int            `json:"n"`
	Extra map[string]any `json:"extra,omitempty"`
}

// decodeReference is Mapper.Decode with encoding/json only: what the fast
// envelope path must agree with, value for value and error for error.
func decodeReference(m *Mapper, r Record) (aggregate.Event, error) {
	fail := func(err error) (aggregate.Event, error) {
		return aggregate.Event{}, &Error{Op: "decode", StreamID: r.StreamID, Position: r.Position, Err: err}
	}
	body, err := m.open(r)
	if err != nil {
		return fail(err)
	}
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil {
		return fail(fmt.Errorf("%w: envelope: %v", ErrIntegrity, err))
	}
	e, err := m.event(r, &env)
	if err != nil {
		return fail(err)
	}
	return e, nil
}

func decodeTestRecords(t testing.TB, m *Mapper) []Record {
	t.Helper()
	tm := time.Date(2026, 11, 22, 5, 40, 0, 123456000, time.UTC)
	events := []aggregate.Event{
		{Payload: &decodeThing{What: "dinosaurs", N: 3}},
		{AggregateType: "World", Payload: &decodeThing{What: `quotes " and \ and <&> and é`}},
		{AggregateType: "Wörld", Payload: &decodeThing{Extra: map[string]any{"a": []any{1.5, "}", "{"}}}},
		{Payload: &decodeThing{What: "meta"}, Metadata: aggregate.Metadata{CorrelationID: "c-1", CausationID: `x"}`, Values: map[string]string{"traceparent": "00-ab"}}},
		{Payload: &aggregate.Created{Attributes: map[string]any{"ruler": "gods"}}},
		{Payload: &aggregate.Discarded{}},
	}
	var recs []Record
	prev := ""
	for i, e := range events {
		e.ID, e.AggregateID, e.Version, e.Time, e.PreviousHash = uuid.New(), uuid.New(), uint64(i), tm, prev
		if e.AggregateType == "" {
			e.AggregateType = "Thing"
		}
		e.Type = aggregate.TypeName(e.Payload)
		if i != 2 { // one unsealed event
			if err := aggregate.Seal(&e); err != nil {
				t.Fatal(err)
			}
		}
		prev = e.Hash
		r, err := m.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	return recs
}

func sameDecode(t *testing.T, m *Mapper, r Record) {
	t.Helper()
	got, gerr := m.Decode(r)
	want, werr := decodeReference(m, r)
	if (gerr == nil) != (werr == nil) || gerr != nil && gerr.Error() != werr.Error() {
		t.Fatalf("data %q:\n error %v\n  want %v", r.Data, gerr, werr)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("data %q:\n event %+v\n  want %+v", r.Data, got, want)
	}
}

// TestDecodeFastPathMatchesEncodingJSON: the hand-written envelope path
// must give exactly what encoding/json gives, for what the mapper writes
// and for any corruption of it.
func TestDecodeFastPathMatchesEncodingJSON(t *testing.T) {
	reg := aggregate.NewRegistry()
	aggregate.Register[decodeThing](reg)
	m := &Mapper{Registry: reg}
	recs := decodeTestRecords(t, m)
	for i, r := range recs {
		var env envelope
		// Record 2's aggregate type is not ASCII: left to encoding/json.
		if decodeEnvelopeFast(r.Data, &env) != (i != 2) {
			t.Errorf("fast path accepted %v: %s", i != 2, r.Data)
		}
		sameDecode(t, m, r)
	}
	// Hand-picked variants the fast path must leave to encoding/json or
	// agree on.
	base := string(recs[0].Data)
	variants := []string{
		base + " ", " " + base, base[:len(base)-1], base + "}", base[:len(base)-2] + " }}",
		`{"ID":` + base[len(`{"id":`):],
		`{"id":"` + "ABCDEF00-0000-0000-0000-000000000000" + base[len(`{"id":"`)+36:],
	}
	for _, v := range variants {
		r := recs[0]
		r.Data = []byte(v)
		sameDecode(t, m, r)
	}
	// Random corruption: replace, insert and delete bytes.
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte(`{}[]":,\ 0123456789abcdef-_eE.+nulltrue"`)
	for i := range 20000 {
		r := recs[i%len(recs)]
		d := append([]byte(nil), r.Data...)
		for range 1 + rng.IntN(3) {
			at := rng.IntN(len(d))
			c := alphabet[rng.IntN(len(alphabet))]
			switch rng.IntN(3) {
			case 0:
				d[at] = c
			case 1:
				d = append(d[:at], append([]byte{c}, d[at:]...)...)
			default:
				d = append(d[:at], d[at+1:]...)
			}
		}
		r.Data = d
		sameDecode(t, m, r)
	}
}

func FuzzDecodeEnvelope(f *testing.F) {
	reg := aggregate.NewRegistry()
	aggregate.Register[decodeThing](reg)
	m := &Mapper{Registry: reg}
	recs := decodeTestRecords(f, m)
	for _, r := range recs {
		f.Add(r.Data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := recs[0]
		r.Data = data
		sameDecode(t, m, r)
	})
}

// TestDecodeLongStream: a stream long enough to be decoded on several
// goroutines gives the events in order, and the first failing record's
// error when several fail.
func TestDecodeLongStream(t *testing.T) {
	reg := aggregate.NewRegistry()
	aggregate.Register[decodeThing](reg)
	s := MustNew(nil, reg, Options{})
	events := make([]aggregate.Event, 3000)
	id, prev := uuid.New(), ""
	for i := range events {
		e := aggregate.Event{ID: uuid.New(), AggregateID: id, AggregateType: "Thing", Version: uint64(i), Type: "decodeThing",
			Time: time.Date(2026, 11, 22, 5, 40, 0, 0, time.UTC), Payload: &decodeThing{N: i}, PreviousHash: prev}
		if err := aggregate.Seal(&e); err != nil {
			t.Fatal(err)
		}
		events[i], prev = e, e.Hash
	}
	recs, err := s.Encode(events...)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Decode(recs)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range got {
		if e.Version != uint64(i) || e.Payload.(*decodeThing).N != i || e.Hash != events[i].Hash {
			t.Fatalf("event %d: %+v", i, e)
		}
	}
	for _, bad := range [][]int{{2999}, {2500, 700}, {700, 2500, 1}} {
		broken := append([]Record(nil), recs...)
		for _, i := range bad {
			broken[i].Data = []byte(`{"id":"x"}`)
		}
		_, err := s.Decode(broken)
		var se *Error
		first := slices.Min(bad)
		if !errors.As(err, &se) || se.Position != uint64(first) || !errors.Is(err, ErrIntegrity) {
			t.Errorf("records %v broken: %v, want the error of record %d", bad, err, first)
		}
	}
}

// TestEncodeBigBatchErrors: records and messages of a batch come out in
// order, and the error is the first failing record's, record errors
// before message errors.
func TestEncodeBigBatchErrors(t *testing.T) {
	reg := aggregate.NewRegistry()
	aggregate.Register[decodeThing](reg)
	s := MustNew(nil, reg, Options{})
	s.outbox = &outbox.Builder{Registry: reg}
	batch := func() []aggregate.Event {
		events := make([]aggregate.Event, 200)
		id := uuid.New()
		for i := range events {
			events[i] = aggregate.Event{ID: uuid.New(), AggregateID: id, AggregateType: "Thing", Version: uint64(i), Type: "decodeThing",
				Time: time.Date(2026, 11, 22, 5, 40, 0, 0, time.UTC), Payload: &decodeThing{N: i}}
		}
		return events
	}
	events := batch()
	recs, msgs, err := s.encodeWithMessages(events, 0)
	if err != nil || len(recs) != 200 || len(msgs) != 200 {
		t.Fatalf("%d records, %d messages, %v", len(recs), len(msgs), err)
	}
	for i := range events {
		if recs[i].Position != uint64(i) || string(msgs[i].Header(outbox.HeaderAggregateVersion)) != fmt.Sprint(i) {
			t.Fatalf("record/message %d out of place", i)
		}
	}
	events = batch()
	events[20].AggregateType = "not a topic" // message error, earlier
	events[150].Type = "Unknown"             // record error, later
	events[170].Type = "Unknown"
	var se *Error
	if _, _, err := s.encodeWithMessages(events, 0); !errors.Is(err, ErrUnknownEventType) || !errors.As(err, &se) || se.Position != 150 {
		t.Errorf("err = %v, want the unknown type of record 150", err)
	}
	events[150].Type, events[170].Type = "decodeThing", "decodeThing"
	if _, _, err := s.encodeWithMessages(events, 0); !errors.Is(err, outbox.ErrUnroutable) {
		t.Errorf("err = %v, want ErrUnroutable", err)
	}
}

package writer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"time"

	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/eventstore"
)

// rawPayload is the payload of an event appended through the generic
// stream API: the client's JSON object, stored as it was sent (compacted).
// It is registered in the application's registry under each generic event
// type name the first time one is appended, so the event store's mapper and
// the outbox builder treat it like any other payload.
type rawPayload struct{ JSON json.RawMessage }

// MarshalJSON returns the stored JSON.
func (p rawPayload) MarshalJSON() ([]byte, error) {
	if len(p.JSON) == 0 {
		return []byte("{}"), nil
	}
	return p.JSON, nil
}

// UnmarshalJSON keeps the JSON as it is.
func (p *rawPayload) UnmarshalJSON(b []byte) error {
	p.JSON = append(p.JSON[:0], b...)
	return nil
}

var rawType = reflect.TypeFor[rawPayload]()

// namePattern is what generic aggregate and event type names may look
// like: it keeps them legal in Kafka topic names ("esflow." + aggregate
// type) and headers.
var namePattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9._-]{0,99}$`)

// DefaultStreamType is the aggregate type of a generic stream created
// without "aggregate_type": its events go to the topic "esflow.Stream".
const DefaultStreamType = "Stream"

// codec decodes stored records of any type for the read endpoints: domain
// types through the application's own mapper (with upcasting), generic ones
// as raw JSON, even after a restart has forgotten their registrations.
type codec struct {
	app *eventstore.EventStore
}

func newCodec(store *eventstore.EventStore) *codec { return &codec{app: store} }

// domainType reports whether name is registered in the application's
// registry for a Go type of its own, i.e. it belongs to the domain model
// and the generic API must not write it.
func (c *codec) domainType(name string) bool {
	t, _, ok := c.app.Registry().Lookup(name)
	return ok && t != rawType
}

// register makes a generic event type known to the application's
// registry, so the store can encode it.
func (c *codec) register(name string) error {
	if _, _, ok := c.app.Registry().Lookup(name); ok {
		return nil
	}
	return c.app.Registry().Add(rawType, aggregate.Named(name))
}

// decode maps records to events, verifying each event's hash. Payloads
// of generic types are *rawPayload.
func (c *codec) decode(recs []eventstore.Record) ([]aggregate.Event, error) {
	var raw *eventstore.Mapper
	out := make([]aggregate.Event, len(recs))
	for i, r := range recs {
		m := c.app.Mapper()
		if !c.domainType(r.Topic) {
			if raw == nil {
				cp := *c.app.Mapper()
				cp.Registry = aggregate.NewRegistry()
				raw = &cp
			}
			if err := raw.Registry.Add(rawType, aggregate.Named(r.Topic)); err != nil {
				return nil, fmt.Errorf("writer: decode %s: %w", r.Topic, err)
			}
			m = raw
		}
		e, err := m.Decode(r)
		if err != nil {
			return nil, err
		}
		out[i] = e
	}
	return out, nil
}

// eventJSON is an event as the read endpoints present it.
type eventJSON struct {
	ID            uuid.UUID           `json:"id"`
	StreamID      uuid.UUID           `json:"stream_id"`
	AggregateType string              `json:"aggregate_type"`
	Type          string              `json:"type"`
	Version       uint64              `json:"version"`
	Time          time.Time           `json:"time"`
	Data          json.RawMessage     `json:"data"`
	Metadata      *aggregate.Metadata `json:"metadata,omitempty"`
	PreviousHash  string              `json:"previous_hash,omitempty"`
	Hash          string              `json:"hash"`
	// Encrypted says the record is encrypted at rest (the writer holds the
	// key and decrypted it for this answer).
	Encrypted bool `json:"encrypted,omitempty"`
}

func toJSON(e aggregate.Event) (eventJSON, error) {
	data, err := aggregate.MarshalPayload(e.Payload)
	if err != nil {
		return eventJSON{}, err
	}
	out := eventJSON{
		ID: e.ID, StreamID: e.AggregateID, AggregateType: e.AggregateType, Type: e.Type, Version: e.Version,
		Time: e.Time, Data: data, PreviousHash: e.PreviousHash, Hash: e.Hash,
	}
	if e.Metadata.CorrelationID != "" || e.Metadata.CausationID != "" || len(e.Metadata.Values) > 0 {
		md := e.Metadata
		out.Metadata = &md
	}
	return out, nil
}

// compactObject checks that b is one JSON object and returns it compacted,
// the form it is stored and hashed in.
func compactObject(b json.RawMessage) (json.RawMessage, error) {
	t := bytes.TrimSpace(b)
	if len(t) == 0 || t[0] != '{' {
		return nil, fmt.Errorf("must be a JSON object")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, t); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

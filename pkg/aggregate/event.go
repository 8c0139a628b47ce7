package aggregate

import (
	"encoding/json"
	"errors"
	"reflect"
	"time"

	"github.com/google/uuid"
)

// Sentinel errors of the domain layer. The event store re-exports the ones
// that storage can also produce (eventstore.ErrIntegrity is ErrIntegrity).
var (
	// ErrDiscarded reports a command on an aggregate that was discarded.
	ErrDiscarded = errors.New("aggregate: discarded")
	// ErrNotCreated reports a command on an aggregate that has no
	// creation event yet (use [Create] first).
	ErrNotCreated = errors.New("aggregate: not created")
	// ErrIntegrity reports events that do not verify: a hash that does not
	// match the event, or a chain whose links do not join.
	ErrIntegrity = errors.New("integrity check failed")
	// ErrUnknownEventType reports a type name with no registered Go type.
	ErrUnknownEventType = errors.New("unknown event type")
)

// Event is the envelope of one domain event. Payload is the event's own
// data, always a pointer to a struct (*SomethingHappened); the rest is
// bookkeeping the library fills in.
type Event struct {
	ID            uuid.UUID // unique id of this event
	AggregateID   uuid.UUID // the originator: which aggregate it belongs to
	AggregateType string    // e.g. "World"
	Version       uint64    // the originator version: 0 for the first event
	Type          string    // type name ("topic") the payload is registered under
	Time          time.Time // when it was triggered (UTC, microsecond precision)
	Payload       any
	Metadata      Metadata
	PreviousHash  string // Hash of the aggregate's previous event, "" for the first
	Hash          string // SHA-256 over this event's canonical bytes, see [HashEvent]
}

// Metadata travels with an event but is not part of its hash: it says why
// the event happened, not what happened.
type Metadata struct {
	CorrelationID string            `json:"correlation_id,omitempty"`
	CausationID   string            `json:"causation_id,omitempty"`
	Values        map[string]string `json:"values,omitempty"` // e.g. "traceparent"
}

// TypeName returns the name an event payload (or aggregate) is known by:
// the result of its EventType() string method when it has one, else the
// name of its Go type without package or pointer ("SomethingHappened").
func TypeName(v any) string {
	if n, ok := v.(interface{ EventType() string }); ok {
		return n.EventType()
	}
	t := reflect.TypeOf(v)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return ""
	}
	return t.Name()
}

// Created is a ready-made first event carrying initial attribute values.
type Created struct {
	Attributes map[string]any `json:"attributes,omitempty"`
}

// Decode copies the named attribute into dst (a pointer), whether the
// event was just triggered (values are Go values) or loaded from storage
// (values are decoded JSON). It reports whether the attribute was present.
func (c *Created) Decode(name string, dst any) bool {
	v, ok := c.Attributes[name]
	if !ok {
		return false
	}
	return assign(v, dst)
}

// AttributeChanged is a ready-made event that sets one attribute; see
// [SetAttribute].
type AttributeChanged struct {
	Name  string `json:"name"`
	Value any    `json:"value"`
}

// Decode copies the new value into dst when the event changes the
// attribute called name, and reports whether it did.
func (c *AttributeChanged) Decode(name string, dst any) bool {
	if c.Name != name {
		return false
	}
	return assign(c.Value, dst)
}

// Discarded is the ready-made last event of an aggregate. Applying it
// marks the aggregate discarded: repositories no longer return it.
type Discarded struct{}

// assign sets *dst from v through JSON, so a value reads the same after a
// round trip through storage as before.
func assign(v, dst any) bool {
	if d := reflect.ValueOf(dst); d.Kind() == reflect.Pointer && !d.IsNil() {
		if s := reflect.ValueOf(v); s.IsValid() && s.Type().AssignableTo(d.Elem().Type()) {
			d.Elem().Set(s)
			return true
		}
	}
	b, err := json.Marshal(v)
	if err != nil {
		return false
	}
	return json.Unmarshal(b, dst) == nil
}

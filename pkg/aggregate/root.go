package aggregate

import (
	"fmt"
	"reflect"
	"time"

	"github.com/google/uuid"
)

// Aggregate is implemented by a struct that embeds [Root] and defines
// Apply, the single mutate path used both when an event is triggered and
// when the aggregate is rebuilt from history.
type Aggregate interface {
	// AggregateRoot is promoted from the embedded Root.
	AggregateRoot() *Root
	// Apply changes the aggregate's fields to reflect one event. It must
	// not fail and must not trigger events: the event already happened.
	// Payloads are always pointers (*SomethingHappened).
	Apply(e Event)
}

// Root is the bookkeeping an aggregate embeds: identity, version (the
// number of events applied), head hash, discarded flag, and the events
// triggered since the aggregate was loaded or last saved.
type Root struct {
	id        uuid.UUID
	typ       string
	version   uint64
	head      string
	discarded bool
	pending   []Event
}

// AggregateRoot returns r; it makes any struct embedding Root satisfy
// [Aggregate] once it defines Apply.
func (r *Root) AggregateRoot() *Root { return r }

// ID returns the aggregate's id (uuid.Nil before creation).
func (r *Root) ID() uuid.UUID { return r.id }

// Version returns the number of events applied so far; it is also the
// version the next event will have.
func (r *Root) Version() uint64 { return r.version }

// Head returns the hash of the last applied event: it verifies the whole
// sequence, since each event's hash covers its predecessor's.
func (r *Root) Head() string { return r.head }

// Discarded reports whether a [Discarded] event has been applied.
func (r *Root) Discarded() bool { return r.discarded }

// Type returns the aggregate type name events are stamped with.
func (r *Root) Type() string { return r.typ }

// PendingEvents returns the events triggered since the aggregate was
// loaded or last saved, oldest first.
func (r *Root) PendingEvents() []Event { return append([]Event(nil), r.pending...) }

// ClearPendingEvents forgets the pending events; repositories call it once
// the events are stored.
func (r *Root) ClearPendingEvents() { r.pending = nil }

// Option adjusts an event as it is triggered.
type Option func(*Event)

// WithID sets the aggregate id of a [Create]d aggregate instead of a
// random one.
func WithID(id uuid.UUID) Option { return func(e *Event) { e.AggregateID = id } }

// WithMetadata sets the event's metadata (correlation and causation ids).
func WithMetadata(m Metadata) Option { return func(e *Event) { e.Metadata = m } }

// WithClock makes the event's time come from now instead of time.Now
// (tests use it for deterministic output).
func WithClock(now func() time.Time) Option {
	return func(e *Event) { e.Time = now().UTC().Truncate(time.Microsecond) }
}

// Create gives a new aggregate its identity and triggers its first event,
// commonly a [Created] or a domain-specific "created" event.
func Create(a Aggregate, payload any, opts ...Option) error {
	r := a.AggregateRoot()
	if r.id != uuid.Nil {
		return fmt.Errorf("aggregate: create %s %s: already created", r.typ, r.id)
	}
	e := Event{AggregateID: uuid.New()}
	for _, o := range opts {
		o(&e)
	}
	if e.AggregateID == uuid.Nil {
		return fmt.Errorf("aggregate: create: nil id")
	}
	r.id = e.AggregateID
	r.typ = TypeName(a)
	return trigger(a, r, payload, opts)
}

// Trigger records that something happened: it builds the event, applies
// it through a.Apply and keeps it pending until the aggregate is saved.
// Command methods call it instead of changing fields directly, so that the
// same change happens again whenever the aggregate is rebuilt from its
// events. A non-pointer payload is stored as a pointer to a copy.
func Trigger(a Aggregate, payload any, opts ...Option) error {
	r := a.AggregateRoot()
	if r.id == uuid.Nil {
		return fmt.Errorf("aggregate: trigger %s: %w", TypeName(payload), ErrNotCreated)
	}
	if r.discarded {
		return fmt.Errorf("aggregate: trigger %s on %s %s: %w", TypeName(payload), r.typ, r.id, ErrDiscarded)
	}
	return trigger(a, r, payload, opts)
}

// SetAttribute triggers an [AttributeChanged] event: the seed pages'
// event-sourced attribute (world.ruler = "money").
func SetAttribute(a Aggregate, name string, value any, opts ...Option) error {
	return Trigger(a, &AttributeChanged{Name: name, Value: value}, opts...)
}

// Discard triggers the [Discarded] event.
func Discard(a Aggregate, opts ...Option) error {
	return Trigger(a, &Discarded{}, opts...)
}

func trigger(a Aggregate, r *Root, payload any, opts []Option) error {
	if payload == nil {
		return fmt.Errorf("aggregate: trigger: nil payload")
	}
	payload = pointerTo(payload)
	e := Event{
		ID:            uuid.New(),
		AggregateID:   r.id,
		AggregateType: r.typ,
		Version:       r.version,
		Type:          TypeName(payload),
		Time:          time.Now().UTC().Truncate(time.Microsecond),
		Payload:       payload,
		PreviousHash:  r.head,
	}
	for _, o := range opts {
		o(&e)
	}
	e.AggregateID, e.Version, e.PreviousHash = r.id, r.version, r.head // options may not move an event
	if err := Seal(&e); err != nil {
		return err
	}
	apply(a, r, e)
	r.pending = append(r.pending, e)
	return nil
}

func apply(a Aggregate, r *Root, e Event) {
	a.Apply(e)
	r.version = e.Version + 1
	r.head = e.Hash
	if _, ok := e.Payload.(*Discarded); ok {
		r.discarded = true
	}
}

// Replay rebuilds an aggregate from stored events, oldest first, through
// the same Apply path as [Trigger]. The first event must follow the
// aggregate's current version (0 for a fresh value, or a snapshot's) and
// every event must link to the previous one's hash; otherwise Replay stops
// with an error matching [ErrIntegrity].
func Replay(a Aggregate, events ...Event) error {
	r := a.AggregateRoot()
	for _, e := range events {
		if e.Version != r.version {
			return fmt.Errorf("aggregate %s: event version %d, expected %d: %w", e.AggregateID, e.Version, r.version, ErrIntegrity)
		}
		if r.id == uuid.Nil {
			r.id, r.typ = e.AggregateID, e.AggregateType
			if r.typ == "" {
				r.typ = TypeName(a)
			}
		} else if e.AggregateID != r.id {
			return fmt.Errorf("aggregate %s: event of aggregate %s: %w", r.id, e.AggregateID, ErrIntegrity)
		}
		if e.PreviousHash != r.head {
			return fmt.Errorf("aggregate %s version %d: previous hash does not match head: %w", e.AggregateID, e.Version, ErrIntegrity)
		}
		e.Payload = pointerTo(e.Payload)
		apply(a, r, e)
	}
	return nil
}

// Restore sets the bookkeeping of an aggregate rebuilt from a snapshot:
// its fields are already decoded; id, version, head and discarded come
// from the snapshot's envelope.
func Restore(a Aggregate, id uuid.UUID, version uint64, head string, discarded bool) {
	r := a.AggregateRoot()
	r.id, r.typ, r.version, r.head, r.discarded, r.pending = id, TypeName(a), version, head, discarded, nil
}

// pointerTo returns v itself when it is a pointer, else a pointer to a
// copy, so Apply's type switch sees one shape whether an event was just
// triggered or decoded from storage.
func pointerTo(v any) any {
	rv := reflect.ValueOf(v)
	if !rv.IsValid() || rv.Kind() == reflect.Pointer {
		return v
	}
	p := reflect.New(rv.Type())
	p.Elem().Set(rv)
	return p.Interface()
}

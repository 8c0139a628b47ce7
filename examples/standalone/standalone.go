// Package standalone is the seed page "stand-alone example": a domain
// entity with no library base type. Example is a plain struct; Mutate is
// its mutator function; CreateNewExample, SetFoo and Discard construct
// events, apply them with Mutate and publish them on a bus. The only
// library types used are the event envelope, the ready-made event
// payloads and the bus.
package standalone

import (
	"context"
	"errors"

	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/aggregate"
)

// ErrDiscarded reports a command on a discarded entity.
var ErrDiscarded = errors.New("example is discarded")

// Example is a domain entity with an id, a version and an attribute foo.
type Example struct {
	ID        uuid.UUID
	Version   uint64 // one plus the version of the last event applied
	Foo       string
	discarded bool
}

// CreateNewExample is the factory: it constructs a Created event, uses the
// mutator to construct the entity, and publishes the event.
func CreateNewExample(ctx context.Context, bus *aggregate.Bus, foo string) (*Example, error) {
	event := aggregate.Event{
		ID:          uuid.New(),
		AggregateID: uuid.New(),
		Version:     0,
		Payload:     &aggregate.Created{Attributes: map[string]any{"foo": foo}},
	}
	entity := Mutate(nil, event)
	return entity, bus.Publish(ctx, event)
}

// SetFoo changes foo through an AttributeChanged event.
func (x *Example) SetFoo(ctx context.Context, bus *aggregate.Bus, value string) error {
	if x.discarded {
		return ErrDiscarded
	}
	event := aggregate.Event{
		ID: uuid.New(), AggregateID: x.ID, Version: x.Version,
		Payload: &aggregate.AttributeChanged{Name: "foo", Value: value},
	}
	Mutate(x, event)
	return bus.Publish(ctx, event)
}

// Discard discards the entity through a Discarded event.
func (x *Example) Discard(ctx context.Context, bus *aggregate.Bus) error {
	if x.discarded {
		return ErrDiscarded
	}
	event := aggregate.Event{ID: uuid.New(), AggregateID: x.ID, Version: x.Version, Payload: &aggregate.Discarded{}}
	Mutate(x, event)
	return bus.Publish(ctx, event)
}

// Mutate is the mutator function: Created constructs an entity,
// AttributeChanged sets the named value, Discarded marks the entity
// discarded and returns nil. Each increases the version, so the version is
// always one plus the version of the last event applied. Replaying a
// sequence of events calls it once per event on an evolving state.
func Mutate(entity *Example, event aggregate.Event) *Example {
	switch p := event.Payload.(type) {
	case *aggregate.Created:
		entity = &Example{ID: event.AggregateID, Version: event.Version}
		p.Decode("foo", &entity.Foo)
	case *aggregate.AttributeChanged:
		if p.Name == "foo" {
			p.Decode("foo", &entity.Foo)
		}
	case *aggregate.Discarded:
		entity.Version++
		entity.discarded = true
		return nil
	default:
		// An event this model does not know changes nothing but still
		// counts, so versions stay aligned with the stream.
		if entity == nil {
			return nil
		}
	}
	entity.Version++
	return entity
}

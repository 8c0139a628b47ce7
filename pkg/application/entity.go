package application

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/eventstore"
)

// Mutator applies one event to an entity and returns the new entity: the
// seed pages' mutator function. It gets the zero T for the first event
// and returns the zero T (nil) when the event discards the entity.
type Mutator[T any] func(entity T, e aggregate.Event) T

// EntityRepository loads entities of a bring-your-own model: plain structs
// with no base type, rebuilt by a [Mutator]. Events reach the store
// through a [PersistencePolicy] or [eventstore.EventStore.Append].
type EntityRepository[T any] struct {
	store  *eventstore.EventStore
	mutate Mutator[T]
}

// NewEntityRepository returns a repository that rebuilds entities with
// mutate.
func NewEntityRepository[T any](store *eventstore.EventStore, mutate Mutator[T]) *EntityRepository[T] {
	return &EntityRepository[T]{store: store, mutate: mutate}
}

// Get replays the entity's events through the mutator. An entity with no
// events, or whose mutator returned the zero value (discarded), is an
// error matching [ErrNotFound].
func (r *EntityRepository[T]) Get(ctx context.Context, id uuid.UUID) (T, error) {
	var entity T
	events, err := r.store.Events(ctx, id, eventstore.StreamQuery{})
	if err != nil {
		return entity, err
	}
	if len(events) == 0 {
		return entity, fmt.Errorf("application: get %s: %w", id, ErrNotFound)
	}
	if events[0].Version != 0 || events[0].PreviousHash != "" {
		return entity, &eventstore.Error{Op: "replay", StreamID: id, Err: fmt.Errorf("stream does not start at version 0: %w", eventstore.ErrIntegrity)}
	}
	for _, e := range events {
		entity = r.mutate(entity, e)
	}
	if isZero(entity) {
		return entity, fmt.Errorf("application: get %s: %w (discarded)", id, ErrNotFound)
	}
	return entity, nil
}

// Contains reports whether the entity exists and is not discarded.
func (r *EntityRepository[T]) Contains(ctx context.Context, id uuid.UUID) (bool, error) {
	_, err := r.Get(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

func isZero[T any](v T) bool {
	rv := reflect.ValueOf(&v).Elem()
	return rv.IsZero()
}

// PersistencePolicy stores every event published on a bus: the seed
// pages' persistence policy. Publishing then returns the store's error
// (for example ErrConcurrency) to the command that published.
type PersistencePolicy struct {
	unsubscribe func()
}

// NewPersistencePolicy subscribes to bus and appends published events to
// store. When aggregateTypes are given, only events of those aggregate
// types are stored.
func NewPersistencePolicy(store *eventstore.EventStore, bus *aggregate.Bus, aggregateTypes ...string) *PersistencePolicy {
	keep := map[string]bool{}
	for _, t := range aggregateTypes {
		keep[t] = true
	}
	p := &PersistencePolicy{}
	p.unsubscribe = bus.Subscribe(func(ctx context.Context, events ...aggregate.Event) error {
		if len(keep) > 0 {
			var kept []aggregate.Event
			for _, e := range events {
				if keep[e.AggregateType] {
					kept = append(kept, e)
				}
			}
			events = kept
		}
		return store.Append(ctx, events...)
	})
	return p
}

// Close unsubscribes the policy from its bus.
func (p *PersistencePolicy) Close() error {
	p.unsubscribe()
	return nil
}

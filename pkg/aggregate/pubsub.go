package aggregate

import (
	"context"
	"errors"
	"sync"
)

// Handler receives published events.
type Handler func(ctx context.Context, events ...Event) error

// Bus is an in-process publish/subscribe mechanism for events (the seed
// pages' publish and subscribe functions), for users who prefer that
// style to saving aggregates through a repository. Pair it with a
// persistence policy (application.PersistencePolicy) that stores what is
// published. The zero value is ready to use.
type Bus struct {
	mu     sync.RWMutex
	nextID int
	subs   []subscription
}

type subscription struct {
	id int
	fn Handler
}

// Subscribe registers fn to receive every published event and returns a
// function that unsubscribes it.
func (b *Bus) Subscribe(fn Handler) (unsubscribe func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.nextID++
	id := b.nextID
	b.subs = append(b.subs, subscription{id: id, fn: fn})
	return func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		for i, s := range b.subs {
			if s.id == id {
				b.subs = append(b.subs[:i:i], b.subs[i+1:]...)
				return
			}
		}
	}
}

// Publish hands events to every subscriber in subscription order and
// returns their errors joined. Subscribers run on the caller's goroutine,
// so a persistence policy's error reaches the command that published.
func (b *Bus) Publish(ctx context.Context, events ...Event) error {
	b.mu.RLock()
	subs := append([]subscription(nil), b.subs...)
	b.mu.RUnlock()
	var errs []error
	for _, s := range subs {
		if err := s.fn(ctx, events...); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

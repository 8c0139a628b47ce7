package relayservice

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"

	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/outbox"
)

// republishSection is how many notifications one read and one publish take.
const republishSection = 500

// Republish publishes every stored event again, in notification-log order,
// as the relay first published it (topic, key = aggregate id, headers,
// value: [eventstore.EventStore.Message]), except the events whose outbox
// messages are still waiting: the relay publishes those itself, after.
// It is for a broker that lost its log (the embedded one, after a
// restart): run it before the relay and before accepting writes, so each
// topic holds every event once and in order. Projectors that consume the
// topics again skip what their tracking rows already hold. It returns the
// number of events published.
func (s *Service) Republish(ctx context.Context, app *application.Application) (int, error) {
	pending, err := pendingEvents(ctx, app.Outbox())
	if err != nil {
		return 0, err
	}
	dec := newRawDecoder(app.Store)
	published := 0
	for start := uint64(1); ; {
		ns, err := app.Store.Notifications(ctx, eventstore.NotificationQuery{Start: start, Limit: republishSection})
		if err != nil {
			return published, fmt.Errorf("republish: read notifications from %d: %w", start, err)
		}
		if len(ns) == 0 {
			return published, nil
		}
		msgs := make([]outbox.Message, 0, len(ns))
		for _, n := range ns {
			start = n.ID + 1
			e, err := dec.decode(n.Record)
			if err != nil {
				return published, fmt.Errorf("republish: notification %d: %w", n.ID, err)
			}
			if pending[e.ID] {
				continue
			}
			m, err := app.Store.Message(e, n.Data)
			if err != nil {
				return published, fmt.Errorf("republish: notification %d: %w", n.ID, err)
			}
			msgs = append(msgs, m)
		}
		if len(msgs) == 0 {
			continue
		}
		if err := s.pub.Publish(ctx, msgs); err != nil {
			return published, fmt.Errorf("republish: publish %d messages: %w", len(msgs), err)
		}
		published += len(msgs)
	}
}

// pendingEvents returns the event ids of the messages still in the outbox.
func pendingEvents(ctx context.Context, box application.Outbox) (map[uuid.UUID]bool, error) {
	b, err := box.Backlog(ctx, outbox.Shard{})
	if err != nil {
		return nil, fmt.Errorf("republish: outbox backlog: %w", err)
	}
	out := map[uuid.UUID]bool{}
	if b.Messages == 0 {
		return out, nil
	}
	msgs, err := box.Fetch(ctx, outbox.Shard{}, int(b.Messages)+republishSection)
	if err != nil {
		return nil, fmt.Errorf("republish: outbox messages: %w", err)
	}
	for _, m := range msgs {
		if id, err := uuid.ParseBytes(m.Header(outbox.HeaderEventID)); err == nil {
			out[id] = true
		}
	}
	return out, nil
}

// rawJSON is the payload of an event type this process has no Go type
// for (the writer's generic streams): its stored JSON, unchanged.
type rawJSON struct{ json.RawMessage }

func (p rawJSON) MarshalJSON() ([]byte, error) { return p.RawMessage, nil }

func (p *rawJSON) UnmarshalJSON(b []byte) error {
	p.RawMessage = append(json.RawMessage(nil), b...)
	return nil
}

// rawDecoder decodes records with the application's mapper when their
// type is registered (upcasters apply) and as rawJSON otherwise.
type rawDecoder struct {
	store *eventstore.EventStore
	raw   *eventstore.Mapper
}

func newRawDecoder(store *eventstore.EventStore) *rawDecoder {
	cp := *store.Mapper()
	cp.Registry = aggregate.NewRegistry()
	return &rawDecoder{store: store, raw: &cp}
}

func (d *rawDecoder) decode(r eventstore.Record) (aggregate.Event, error) {
	if _, _, ok := d.store.Registry().Lookup(r.Topic); ok {
		return d.store.Mapper().Decode(r)
	}
	if _, _, ok := d.raw.Registry.Lookup(r.Topic); !ok {
		if err := d.raw.Registry.Add(reflect.TypeFor[rawJSON](), aggregate.Named(r.Topic)); err != nil {
			return aggregate.Event{}, err
		}
	}
	return d.raw.Decode(r)
}

package projection

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/outbox"
)

// Event is one published domain event as handed to a projection: the
// envelope's fields plus where the message was read from.
type Event struct {
	EventID          uuid.UUID
	EventType        string
	AggregateID      uuid.UUID
	AggregateType    string
	AggregateVersion uint64
	Timestamp        time.Time
	SchemaVersion    int
	Metadata         aggregate.Metadata
	// Payload is the event's JSON payload (decrypted when the runner has
	// a Mapper and the envelope was published encrypted).
	Payload json.RawMessage

	Topic     string
	Partition int
	Offset    int64
	// Redriven is set when the event comes from the dead-letter topic
	// through [Runner.Redrive]: it is applied after later versions of its
	// aggregate were, so handlers must not assume version order for it.
	Redriven bool
}

// Decode unmarshals the payload into v.
func (e Event) Decode(v any) error {
	if err := json.Unmarshal(e.Payload, v); err != nil {
		return fmt.Errorf("projection: decode %s payload of event %s: %w", e.EventType, e.EventID, err)
	}
	return nil
}

// ErrUndecodable matches the error of a message that is not a readable
// event envelope; such messages are dead-lettered at once.
var ErrUndecodable = errors.New("projection: undecodable message")

// decodeMessage turns a Kafka message into an Event. Encrypted envelopes
// are opened with mapper; without one they are undecodable.
func decodeMessage(m kafka.Message, mapper *eventstore.Mapper) (Event, error) {
	env, err := outbox.DecodeEnvelope(m.Value)
	if err != nil {
		return Event{}, fmt.Errorf("%w: %w", ErrUndecodable, err)
	}
	e := Event{
		EventID: env.EventID, EventType: env.EventType, AggregateID: env.AggregateID,
		AggregateType: env.AggregateType, AggregateVersion: env.AggregateVersion,
		Timestamp: env.Timestamp, SchemaVersion: env.SchemaVersion, Payload: env.Payload,
		Topic: m.Topic, Partition: m.Partition, Offset: m.Offset,
	}
	if env.Metadata != nil {
		e.Metadata = *env.Metadata
	}
	if env.AggregateVersion > 1<<62 {
		return Event{}, fmt.Errorf("%w: aggregate version %d out of range", ErrUndecodable, env.AggregateVersion)
	}
	if len(env.Encrypted) == 0 {
		return e, nil
	}
	if mapper == nil {
		return Event{}, fmt.Errorf("%w: event %s is encrypted and the runner has no Mapper", ErrUndecodable, env.EventID)
	}
	rec := eventstore.Record{StreamID: env.AggregateID, Position: env.AggregateVersion, Topic: env.EventType, Data: env.Encrypted}
	ev, err := mapper.Decode(rec)
	if err != nil {
		return Event{}, fmt.Errorf("%w: %w", ErrUndecodable, err)
	}
	if e.Payload, err = aggregate.MarshalPayload(ev.Payload); err != nil {
		return Event{}, fmt.Errorf("%w: %w", ErrUndecodable, err)
	}
	e.Metadata = ev.Metadata
	return e, nil
}

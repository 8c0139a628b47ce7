package eventstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/aggregate"
)

// Verification is what [EventStore.VerifyStream] found.
type Verification struct {
	StreamID uuid.UUID
	// Events is how many events the stream has.
	Events int
	// Head is the hash of the last event that verified: the stream's head
	// when OK.
	Head string
	// OK is true when every event's hash matches its stored content, the
	// first links to "" and each other one to the event before it, and
	// versions are consecutive.
	OK bool
	// Problem says what broke when not OK (an error matching ErrIntegrity
	// or ErrCipher), and Position is the version of the first event that
	// did not verify.
	Problem  error
	Position uint64
}

// VerifyStream reads a whole stream and checks its hash chain and head:
// every event's own hash over its stored bytes, each one's link to the
// one before, consecutive versions. The payloads are not decoded into Go
// types (Mapper.DecodeRaw), so any stream can be checked whatever its
// types. A broken chain is a Verification with OK false and a nil error;
// the error reports a stream that has no events (ErrNotFound) or a
// failure to read it.
func (s *EventStore) VerifyStream(ctx context.Context, id uuid.UUID) (Verification, error) {
	recs, err := s.recorder.ReadStream(ctx, id, StreamQuery{})
	if err != nil {
		return Verification{}, err
	}
	if len(recs) == 0 {
		return Verification{}, fmt.Errorf("stream %s has no events: %w", id, ErrNotFound)
	}
	v := Verification{StreamID: id, Events: len(recs)}
	events := make([]aggregate.Event, 0, len(recs))
	for i, r := range recs {
		e, err := s.mapper.DecodeRaw(r)
		if err != nil {
			if errors.Is(err, ErrIntegrity) || errors.Is(err, ErrCipher) {
				v.Problem, v.Position = err, r.Position
				return v, nil
			}
			return Verification{}, err
		}
		events = append(events, e)
		// The link to the event before (to "" for the first) and, from
		// the second on, the consecutive version.
		from, prev := max(i-1, 0), ""
		if i > 0 {
			prev = events[i-1].PreviousHash
		}
		if _, err := aggregate.VerifyChain(prev, events[from:i+1]); err != nil {
			v.Problem, v.Position = &Error{Op: "verify", StreamID: id, Position: r.Position, Err: err}, r.Position
			return v, nil
		}
		v.Head = e.Hash
	}
	v.OK = true
	return v, nil
}

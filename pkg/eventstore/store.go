package eventstore

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/outbox"
)

// OutboxRecorder is a Recorder that also writes outbox messages in the
// same transaction as records: both commit, or neither does. The outbox
// backends (pkg/outbox/…) implement it.
type OutboxRecorder interface {
	Recorder
	// AppendWithOutbox appends records as Append does and writes msgs in
	// the same transaction. records may be empty (messages only).
	AppendWithOutbox(ctx context.Context, records []Record, msgs []outbox.Message) error
}

// EventStore stores and retrieves domain events through a [Recorder],
// mapping them with a [Mapper]. It is what repositories and applications
// use; backends only deal in records.
type EventStore struct {
	recorder  Recorder
	snapshots SnapshotRecorder // nil when the recorder has none
	mapper    *Mapper
	outbox    *outbox.Builder // nil: no outbox
	outboxRec OutboxRecorder
}

// Options configures an [EventStore]. The zero value stores plain JSON
// with a 1 MiB limit per event.
type Options struct {
	Cipher      *Cipher // encrypt records (AES-256-GCM); nil for plain
	Compress    bool    // deflate before encrypting
	MaxDataSize int     // see Mapper.MaxDataSize
	// Outbox, when set, turns every append into events plus their outbox
	// messages in one transaction. The recorder must be an OutboxRecorder.
	Outbox *outbox.Builder
}

// ErrNoOutbox reports an outbox option on a recorder that cannot write
// outbox messages, or messages appended to a store without an outbox.
var ErrNoOutbox = outbox.ErrNoOutbox

// New returns an event store over rec that decodes types known to reg.
// Snapshots are available when rec also implements [SnapshotRecorder].
// With opts.Outbox set, rec must implement [OutboxRecorder]; otherwise
// New returns an error matching ErrNoOutbox.
func New(rec Recorder, reg *aggregate.Registry, opts Options) (*EventStore, error) {
	s := &EventStore{
		recorder: rec,
		mapper:   &Mapper{Registry: reg, Cipher: opts.Cipher, Compress: opts.Compress, MaxDataSize: opts.MaxDataSize},
		outbox:   opts.Outbox,
	}
	s.snapshots, _ = rec.(SnapshotRecorder)
	if s.outbox != nil {
		var ok bool
		if s.outboxRec, ok = rec.(OutboxRecorder); !ok {
			return nil, fmt.Errorf("%w: %T does not implement OutboxRecorder", ErrNoOutbox, rec)
		}
		if s.outbox.Registry == nil {
			b := *s.outbox
			b.Registry = reg
			s.outbox = &b
		}
	}
	return s, nil
}

// MustNew is New for options known to be valid (no outbox, or a recorder
// known to support it); it panics otherwise. Use it in examples and tests.
func MustNew(rec Recorder, reg *aggregate.Registry, opts Options) *EventStore {
	s, err := New(rec, reg, opts)
	if err != nil {
		panic(err)
	}
	return s
}

// Recorder returns the underlying recorder (the seed pages' "active
// record strategy"), for reading raw records.
func (s *EventStore) Recorder() Recorder { return s.recorder }

// Mapper returns the event/record mapper.
func (s *EventStore) Mapper() *Mapper { return s.mapper }

// Registry returns the type registry.
func (s *EventStore) Registry() *aggregate.Registry { return s.mapper.Registry }

// Encode maps events to records without storing them; callers that write
// records themselves (the transactional outbox) use it.
func (s *EventStore) Encode(events ...aggregate.Event) ([]Record, error) {
	recs := make([]Record, len(events))
	for i, e := range events {
		r, err := s.mapper.Encode(e)
		if err != nil {
			return nil, err
		}
		recs[i] = r
	}
	return recs, nil
}

// Append stores events of one or many aggregates atomically. Each
// aggregate's events must continue its stream: the first one's version is
// the expected version. A stale version fails with ErrConcurrency and
// stores nothing.
//
// With an outbox, each event's message is written in the same transaction,
// with the W3C trace context of ctx's span, if any, in its traceparent and
// tracestate headers (see [outbox.SetTraceContext]).
func (s *EventStore) Append(ctx context.Context, events ...aggregate.Event) error {
	return s.AppendWithMessages(ctx, nil, events...)
}

// AppendWithMessages appends events, their outbox messages and the given
// integration messages (a service's own, not derived from events) in one
// transaction. Messages need an outbox (ErrNoOutbox otherwise).
func (s *EventStore) AppendWithMessages(ctx context.Context, extra []outbox.Message, events ...aggregate.Event) error {
	if len(events) == 0 && len(extra) == 0 {
		return nil
	}
	if s.outbox == nil {
		recs, err := s.Encode(events...)
		if err != nil {
			return err
		}
		if len(extra) > 0 {
			return &Error{Op: "append", Err: ErrNoOutbox}
		}
		return s.recorder.Append(ctx, recs)
	}
	recs, msgs, err := s.encodeWithMessages(events, len(extra))
	if err != nil {
		return err
	}
	for _, m := range extra {
		if m.Topic == "" {
			return &Error{Op: "append", Err: fmt.Errorf("%w: integration message without a topic", outbox.ErrUnroutable)}
		}
	}
	msgs = append(msgs, extra...)
	// The trace context of the caller's span goes into the messages'
	// headers, so that consumers can link to the span that saved them.
	outbox.SetTraceContext(ctx, msgs)
	return s.outboxRec.AppendWithOutbox(ctx, recs, msgs)
}

// encodeWithMessages maps events to their records and outbox messages
// (with room for extra more messages). Each message reuses the payload
// JSON its record was just encoded and hash-checked with, instead of
// encoding the payload again.
//
// (Encoding a big batch on several goroutines, as Decode does, was tried:
// no gain at one writer, and slower with eight writers on two cores.)
func (s *EventStore) encodeWithMessages(events []aggregate.Event, extra int) ([]Record, []outbox.Message, error) {
	recs := make([]Record, len(events))
	payloads := make([][]byte, len(events))
	for i, e := range events {
		var err error
		if recs[i], payloads[i], err = s.mapper.encode(e); err != nil {
			return nil, nil, err
		}
	}
	msgs := make([]outbox.Message, len(events), len(events)+extra)
	for i, e := range events {
		var err error
		if msgs[i], err = s.outbox.Message(e, payloads[i], recs[i].Data, s.mapper.Cipher != nil); err != nil {
			return nil, nil, &Error{Op: "append", Err: err}
		}
	}
	return recs, msgs, nil
}

// HasOutbox reports whether appends write outbox messages.
func (s *EventStore) HasOutbox() bool { return s.outbox != nil }

// Message rebuilds the outbox message an append wrote for event e, whose
// stored record data is stored: same topic, key, headers and value, so a
// stored event can be published again as the relay first published it
// (without the trace context of the original request). It fails with
// ErrNoOutbox when the store has no outbox.
func (s *EventStore) Message(e aggregate.Event, stored []byte) (outbox.Message, error) {
	if s.outbox == nil {
		return outbox.Message{}, ErrNoOutbox
	}
	return s.outbox.Message(e, nil, stored, s.mapper.Cipher != nil)
}

// Events returns an aggregate's events selected by q, decoded and
// verified: each event's hash must match its content and, for ascending
// reads, each must link to the hash of the one before it.
func (s *EventStore) Events(ctx context.Context, id uuid.UUID, q StreamQuery) ([]aggregate.Event, error) {
	recs, err := s.recorder.ReadStream(ctx, id, q)
	if err != nil {
		return nil, err
	}
	events, err := s.Decode(recs)
	if err != nil {
		return nil, err
	}
	if !q.Descending && len(events) > 1 {
		if _, err := aggregate.VerifyChain(events[0].PreviousHash, events); err != nil {
			return nil, &Error{Op: "read stream", StreamID: id, Err: err}
		}
	}
	return events, nil
}

// Decode maps records to events. When several records fail, the error
// is the first one's.
func (s *EventStore) Decode(recs []Record) ([]aggregate.Event, error) {
	events := make([]aggregate.Event, len(recs))
	// A long stream (loading a big aggregate without a snapshot) is
	// decoded on several cores: decoding (envelope, hash, payload JSON)
	// is almost all of a load's client CPU.
	err := inChunks(len(recs), parallelDecodeMin, func(from, to int) error {
		for i := from; i < to; i++ {
			e, err := s.mapper.Decode(recs[i])
			if err != nil {
				return err
			}
			events[i] = e
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return events, nil
}

// parallelDecodeMin is the number of records per goroutine below which
// Decode does not start another one.
const parallelDecodeMin = 256

// inChunks runs fn over [0, n) split into contiguous chunks, on up to
// GOMAXPROCS goroutines (at most 8) of at least minPer items each; on one
// goroutine when n is small. Each chunk stops at its first failure, so
// the error returned, that of the lowest failing chunk, is the one a
// sequential loop would have returned.
func inChunks(n, minPer int, fn func(from, to int) error) error {
	workers := min(runtime.GOMAXPROCS(0), n/minPer, 8)
	if workers <= 1 {
		return fn(0, n)
	}
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		from, to := w*n/workers, (w+1)*n/workers
		wg.Go(func() { errs[w] = fn(from, to) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// Notifications reads a section of the global log (see
// [Recorder.ReadNotifications]).
func (s *EventStore) Notifications(ctx context.Context, q NotificationQuery) ([]Notification, error) {
	return s.recorder.ReadNotifications(ctx, q)
}

type snapshotEnvelope struct {
	Schema    int             `json:"schema,omitempty"`
	Time      string          `json:"time"`
	Head      string          `json:"head,omitempty"`
	Discarded bool            `json:"discarded,omitempty"`
	State     json.RawMessage `json:"state"`
}

// ErrNoSnapshots reports snapshot use on a recorder without snapshot
// support.
var ErrNoSnapshots = fmt.Errorf("eventstore: recorder does not store snapshots")

// SaveSnapshot stores the aggregate's current state: its JSON encoding
// (exported fields, or its own MarshalJSON) with its version and head.
// Pending events should be saved first: the snapshot claims their version.
func (s *EventStore) SaveSnapshot(ctx context.Context, a aggregate.Aggregate) error {
	if s.snapshots == nil {
		return ErrNoSnapshots
	}
	r := a.AggregateRoot()
	state, err := json.Marshal(a)
	if err != nil {
		return &Error{Op: "snapshot", StreamID: r.ID(), Position: r.Version(), Err: err}
	}
	name := aggregate.TypeName(a)
	env, err := json.Marshal(snapshotEnvelope{
		Schema: max(s.mapper.Registry.CurrentVersion(name), 1), Time: time.Now().UTC().Format(aggregate.TimeFormat),
		Head: r.Head(), Discarded: r.Discarded(), State: state,
	})
	if err != nil {
		return &Error{Op: "snapshot", StreamID: r.ID(), Position: r.Version(), Err: err}
	}
	rec := Record{StreamID: r.ID(), Position: r.Version(), Topic: name}
	if rec.Data, err = s.mapper.seal(env, rec); err != nil {
		return &Error{Op: "snapshot", StreamID: r.ID(), Position: r.Version(), Err: err}
	}
	return s.snapshots.SaveSnapshot(ctx, rec)
}

// LoadSnapshot restores into a (a fresh value) the latest snapshot of
// aggregate id taken at a version <= upTo (nil: any). It reports false
// when there is none, or when the recorder keeps no snapshots.
func (s *EventStore) LoadSnapshot(ctx context.Context, id uuid.UUID, upTo *uint64, a aggregate.Aggregate) (bool, error) {
	if s.snapshots == nil {
		return false, nil
	}
	rec, ok, err := s.snapshots.LatestSnapshot(ctx, id, upTo)
	if err != nil || !ok {
		return false, err
	}
	fail := func(err error) (bool, error) {
		return false, &Error{Op: "load snapshot", StreamID: id, Position: rec.Position, Err: err}
	}
	body, err := s.mapper.open(rec)
	if err != nil {
		return fail(err)
	}
	var env snapshotEnvelope
	if err := json.Unmarshal(body, &env); err != nil {
		return fail(fmt.Errorf("%w: snapshot envelope: %v", ErrIntegrity, err))
	}
	state, err := s.mapper.Registry.Upcast(rec.Topic, env.Schema, env.State)
	if err != nil {
		return fail(err)
	}
	if err := json.Unmarshal(state, a); err != nil {
		return fail(fmt.Errorf("%w: snapshot state: %v", ErrIntegrity, err))
	}
	aggregate.Restore(a, id, rec.Position, env.Head, env.Discarded)
	return true, nil
}

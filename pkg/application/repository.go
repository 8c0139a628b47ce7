package application

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/trace"

	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/outbox"
)

// ErrNotFound is returned (wrapped) for an aggregate that does not exist,
// is discarded, or did not exist yet at the requested version. It is
// eventstore.ErrNotFound.
var ErrNotFound = eventstore.ErrNotFound

// Repository loads and saves aggregates of one type T (a pointer to a
// struct embedding aggregate.Root). Loading replays the stored events
// through T's Apply method, starting from the latest snapshot when there
// is one.
type Repository[T aggregate.Aggregate] struct {
	store         *eventstore.EventStore
	newT          func() T
	snapshotEvery uint64
	logger        *slog.Logger
	tracer        trace.Tracer
}

// RepositoryOption configures a [Repository].
type RepositoryOption func(*repoOptions)

type repoOptions struct {
	snapshotEvery uint64
	logger        *slog.Logger
	tracer        trace.TracerProvider
}

// SnapshotEvery makes Save take a snapshot whenever an aggregate's version
// reaches a multiple of n (0, the default, never).
func SnapshotEvery(n uint64) RepositoryOption { return func(o *repoOptions) { o.snapshotEvery = n } }

// WithLogger sets where failed automatic snapshots are reported (the events
// are saved all the same). Default: slog.Default().
func WithLogger(l *slog.Logger) RepositoryOption { return func(o *repoOptions) { o.logger = l } }

// WithTracerProvider sets where Save's spans go (see [Application.Save]).
// Default: the global provider, otel.GetTracerProvider().
func WithTracerProvider(tp trace.TracerProvider) RepositoryOption {
	return func(o *repoOptions) { o.tracer = tp }
}

// NewRepository returns a repository of aggregates made by newT, e.g.
// func() *World { return new(World) }.
func NewRepository[T aggregate.Aggregate](store *eventstore.EventStore, newT func() T, opts ...RepositoryOption) *Repository[T] {
	o := repoOptions{logger: slog.Default()}
	for _, opt := range opts {
		opt(&o)
	}
	return &Repository[T]{store: store, newT: newT, snapshotEvery: o.snapshotEvery, logger: o.logger, tracer: tracerFrom(o.tracer)}
}

// Get returns the aggregate's current state. A missing or discarded
// aggregate is an error matching [ErrNotFound]; events that fail their
// hash chain match eventstore.ErrIntegrity.
func (r *Repository[T]) Get(ctx context.Context, id uuid.UUID) (T, error) {
	a, err := r.load(ctx, id, nil)
	if err != nil {
		var zero T
		return zero, err
	}
	if a.AggregateRoot().Discarded() {
		var zero T
		return zero, fmt.Errorf("application: get %s: %w (discarded)", id, ErrNotFound)
	}
	return a, nil
}

// GetAt returns the aggregate as it was when its version was `version`,
// i.e. after its first `version` events: the historical state.
func (r *Repository[T]) GetAt(ctx context.Context, id uuid.UUID, version uint64) (T, error) {
	var zero T
	if version == 0 {
		return zero, fmt.Errorf("application: get %s at version 0: %w (no events yet)", id, ErrNotFound)
	}
	a, err := r.load(ctx, id, &version)
	if err != nil {
		return zero, err
	}
	root := a.AggregateRoot()
	if root.Version() < version {
		return zero, fmt.Errorf("application: get %s at version %d: %w (it has %d events)", id, version, ErrNotFound, root.Version())
	}
	if root.Discarded() {
		return zero, fmt.Errorf("application: get %s at version %d: %w (discarded)", id, version, ErrNotFound)
	}
	return a, nil
}

// Contains reports whether the aggregate exists and is not discarded.
func (r *Repository[T]) Contains(ctx context.Context, id uuid.UUID) (bool, error) {
	_, err := r.Get(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Save stores the pending events of the given aggregates in one atomic
// append; see [Save].
func (r *Repository[T]) Save(ctx context.Context, aggs ...T) error {
	as := make([]aggregate.Aggregate, len(aggs))
	for i, a := range aggs {
		as[i] = a
	}
	return saveWith(ctx, r.tracer, r.store, nil, as, func(string) uint64 { return r.snapshotEvery }, r.logger)
}

// TakeSnapshot stores a snapshot of the aggregate's current stored state.
func (r *Repository[T]) TakeSnapshot(ctx context.Context, id uuid.UUID) error {
	a, err := r.load(ctx, id, nil)
	if err != nil {
		return err
	}
	return r.store.SaveSnapshot(ctx, a)
}

// load replays the aggregate up to version upTo (nil: all).
func (r *Repository[T]) load(ctx context.Context, id uuid.UUID, upTo *uint64) (T, error) {
	var zero T
	a := r.newT()
	var snapUpTo *uint64
	if upTo != nil {
		snapUpTo = upTo
	}
	snapped, err := r.store.LoadSnapshot(ctx, id, snapUpTo, a)
	if err != nil {
		return zero, err
	}
	q := eventstore.StreamQuery{}
	if snapped && a.AggregateRoot().Version() > 0 {
		after := a.AggregateRoot().Version() - 1
		q.After = &after
	}
	if upTo != nil {
		last := *upTo - 1
		q.UpTo = &last
	}
	events, err := r.store.Events(ctx, id, q)
	if err != nil {
		return zero, err
	}
	if !snapped && len(events) == 0 {
		return zero, fmt.Errorf("application: get %s: %w", id, ErrNotFound)
	}
	if err := aggregate.Replay(a, events...); err != nil {
		return zero, &eventstore.Error{Op: "replay", StreamID: id, Err: err}
	}
	return a, nil
}

// Save stores the pending events of several aggregates, of any types, in
// one atomic append: all of them or none. Afterwards the aggregates have
// no pending events. If any aggregate was changed concurrently since it
// was loaded, Save returns an error matching eventstore.ErrConcurrency and
// stores nothing; the aggregates keep their pending events.
//
// The save is traced as [Application.Save] is, with the global tracer
// provider.
func Save(ctx context.Context, store *eventstore.EventStore, aggs ...aggregate.Aggregate) error {
	return saveWith(ctx, tracerFrom(nil), store, nil, aggs, nil, nil)
}

// saveWith is every save: the span, the append, the snapshots.
func saveWith(ctx context.Context, tr trace.Tracer, store *eventstore.EventStore, msgs []outbox.Message, aggs []aggregate.Aggregate, every func(typ string) uint64, logger *slog.Logger) (err error) {
	ctx, span := startSave(ctx, tr, aggs)
	defer func() { endSave(span, err) }()
	var events []aggregate.Event
	for _, a := range aggs {
		events = append(events, a.AggregateRoot().PendingEvents()...)
	}
	if err := store.AppendWithMessages(ctx, msgs, events...); err != nil {
		return err
	}
	for _, a := range aggs {
		root := a.AggregateRoot()
		pending := root.PendingEvents()
		root.ClearPendingEvents()
		if every == nil || len(pending) == 0 {
			continue
		}
		n := every(root.Type())
		if n == 0 {
			continue
		}
		before := pending[0].Version // version before these events
		if root.Version()/n > before/n {
			if err := store.SaveSnapshot(ctx, a); err != nil && logger != nil {
				logger.WarnContext(ctx, "automatic snapshot failed; events are saved",
					"aggregate_id", root.ID(), "version", root.Version(), "err", err)
			}
		}
	}
	return nil
}

// Package memory is an in-process [eventstore.Recorder] for tests and
// prototypes. It keeps records in Go maps behind one mutex, which makes
// every append a serialised, all-or-nothing step: notification IDs are
// assigned in commit order and never skip.
package memory

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/eventstore"
)

// Store is an in-memory recorder. The zero value is not usable; call New.
type Store struct {
	mu        sync.RWMutex
	streams   map[uuid.UUID][]eventstore.Record
	log       []eventstore.Notification
	snapshots map[uuid.UUID][]eventstore.Record // sorted by position
}

var (
	_ eventstore.Recorder         = (*Store)(nil)
	_ eventstore.SnapshotRecorder = (*Store)(nil)
)

// New returns an empty store.
func New() *Store {
	return &Store{
		streams:   map[uuid.UUID][]eventstore.Record{},
		snapshots: map[uuid.UUID][]eventstore.Record{},
	}
}

func clone(r eventstore.Record) eventstore.Record {
	r.Data = slices.Clone(r.Data)
	return r
}

// Append implements [eventstore.Recorder].
func (s *Store) Append(ctx context.Context, records []eventstore.Record) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := eventstore.ValidateBatch(records); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	checked := map[uuid.UUID]bool{}
	for _, r := range records {
		if checked[r.StreamID] {
			continue
		}
		checked[r.StreamID] = true
		if have := uint64(len(s.streams[r.StreamID])); r.Position != have {
			return eventstore.ConcurrencyError(r.StreamID, r.Position, fmt.Errorf("stream has %d records", have))
		}
	}
	for _, r := range records {
		r = clone(r)
		s.streams[r.StreamID] = append(s.streams[r.StreamID], r)
		s.log = append(s.log, eventstore.Notification{ID: uint64(len(s.log) + 1), Record: r})
	}
	return nil
}

// ReadStream implements [eventstore.Recorder].
func (s *Store) ReadStream(ctx context.Context, streamID uuid.UUID, q eventstore.StreamQuery) ([]eventstore.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []eventstore.Record
	for _, r := range s.streams[streamID] {
		if q.Matches(r.Position) {
			out = append(out, clone(r))
		}
	}
	if q.Descending {
		slices.Reverse(out)
	}
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[:q.Limit]
	}
	return out, nil
}

// ReadNotifications implements [eventstore.Recorder].
func (s *Store) ReadNotifications(ctx context.Context, q eventstore.NotificationQuery) ([]eventstore.Notification, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if q.Limit <= 0 {
		return nil, &eventstore.Error{Op: "read notifications", Err: fmt.Errorf("%w: limit must be > 0", eventstore.ErrInvalidRecord)}
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	start := q.Start
	if start == 0 {
		start = 1
	}
	var out []eventstore.Notification
	for i := start - 1; i < uint64(len(s.log)) && len(out) < q.Limit; i++ {
		n := s.log[i]
		if len(q.Topics) > 0 && !slices.Contains(q.Topics, n.Topic) {
			continue
		}
		n.Record = clone(n.Record)
		out = append(out, n)
	}
	return out, nil
}

// MaxNotificationID implements [eventstore.Recorder].
func (s *Store) MaxNotificationID(ctx context.Context) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return uint64(len(s.log)), nil
}

// SaveSnapshot implements [eventstore.SnapshotRecorder].
func (s *Store) SaveSnapshot(ctx context.Context, snap eventstore.Record) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if snap.StreamID == uuid.Nil || snap.Topic == "" {
		return &eventstore.Error{Op: "save snapshot", Err: fmt.Errorf("%w: snapshot needs a stream id and topic", eventstore.ErrInvalidRecord)}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	snaps := s.snapshots[snap.StreamID]
	i, found := slices.BinarySearchFunc(snaps, snap.Position, func(r eventstore.Record, p uint64) int {
		return cmpU(r.Position, p)
	})
	if found {
		snaps[i] = clone(snap)
	} else {
		snaps = slices.Insert(snaps, i, clone(snap))
	}
	s.snapshots[snap.StreamID] = snaps
	return nil
}

// LatestSnapshot implements [eventstore.SnapshotRecorder].
func (s *Store) LatestSnapshot(ctx context.Context, streamID uuid.UUID, upTo *uint64) (eventstore.Record, bool, error) {
	if err := ctx.Err(); err != nil {
		return eventstore.Record{}, false, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	snaps := s.snapshots[streamID]
	for i := len(snaps) - 1; i >= 0; i-- {
		if upTo == nil || snaps[i].Position <= *upTo {
			return clone(snaps[i]), true, nil
		}
	}
	return eventstore.Record{}, false, nil
}

func cmpU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

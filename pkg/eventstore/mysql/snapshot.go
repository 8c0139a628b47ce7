package mysql

import (
	"context"
	"fmt"
	"math"

	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/eventstore"
)

// SaveSnapshot implements [eventstore.SnapshotRecorder]: it inserts the
// snapshot, replacing one saved earlier at the same (stream, position).
func (s *Store) SaveSnapshot(ctx context.Context, snap eventstore.Record) error {
	const op = "save snapshot"
	if err := s.usable(ctx, op); err != nil {
		return err
	}
	switch {
	case snap.StreamID == uuid.Nil:
		return &eventstore.Error{Op: op, Err: fmt.Errorf("%w: nil stream id", eventstore.ErrInvalidRecord)}
	case snap.Topic == "":
		return &eventstore.Error{Op: op, StreamID: snap.StreamID, Position: snap.Position,
			Err: fmt.Errorf("%w: empty topic", eventstore.ErrInvalidRecord)}
	case snap.Position > math.MaxInt64:
		return &eventstore.Error{Op: op, StreamID: snap.StreamID, Position: snap.Position,
			Err: fmt.Errorf("%w: position exceeds the BIGINT range", eventstore.ErrInvalidRecord)}
	}
	data := snap.Data
	if data == nil {
		data = []byte{}
	}
	if _, err := s.exec(ctx, s.q.saveSnap, snap.StreamID[:], int64(snap.Position), snap.Topic, data); err != nil {
		return &eventstore.Error{Op: op, StreamID: snap.StreamID, Position: snap.Position, Err: TranslateError(err)}
	}
	return nil
}

// LatestSnapshot implements [eventstore.SnapshotRecorder]: the snapshot
// with the highest position <= *upTo (any when upTo is nil); ok is false
// when there is none.
func (s *Store) LatestSnapshot(ctx context.Context, streamID uuid.UUID, upTo *uint64) (eventstore.Record, bool, error) {
	const op = "latest snapshot"
	if err := s.usable(ctx, op); err != nil {
		return eventstore.Record{}, false, err
	}
	query := s.q.latestSnap
	args := []any{streamID[:]}
	if upTo != nil && *upTo < math.MaxInt64 {
		query += " AND " + s.names.Position + " <= ?"
		args = append(args, int64(*upTo))
	}
	query += " ORDER BY " + s.names.Position + " DESC LIMIT 1"
	rows, err := s.query(ctx, query, args...)
	if err != nil {
		return eventstore.Record{}, false, &eventstore.Error{Op: op, StreamID: streamID, Err: TranslateError(err)}
	}
	defer func() { _ = rows.Close() }()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return eventstore.Record{}, false, &eventstore.Error{Op: op, StreamID: streamID, Err: TranslateError(err)}
		}
		return eventstore.Record{}, false, nil
	}
	snap := eventstore.Record{StreamID: streamID}
	var p int64
	if err := rows.Scan(&p, &snap.Topic, &snap.Data); err != nil {
		return eventstore.Record{}, false, &eventstore.Error{Op: op, StreamID: streamID, Err: TranslateError(err)}
	}
	if p < 0 {
		return eventstore.Record{}, false, &eventstore.Error{Op: op, StreamID: streamID,
			Err: fmt.Errorf("%w: negative snapshot position %d", eventstore.ErrIntegrity, p)}
	}
	snap.Position = uint64(p)
	return snap, true, nil
}

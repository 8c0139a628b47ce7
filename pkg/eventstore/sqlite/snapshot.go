package sqlite

import (
	"context"
	"database/sql"
	"errors"
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
			Err: fmt.Errorf("%w: position exceeds %d", eventstore.ErrInvalidRecord, int64(math.MaxInt64))}
	}
	data := snap.Data
	if data == nil {
		data = []byte{}
	}
	release, err := s.acquireWrite(ctx, op)
	if err != nil {
		return err
	}
	defer release()
	if _, err := s.db.ExecContext(ctx, s.q.saveSnapshot, snap.StreamID.String(), int64(snap.Position), snap.Topic, data); err != nil {
		return &eventstore.Error{Op: op, StreamID: snap.StreamID, Position: snap.Position, Err: TranslateError(err)}
	}
	return nil
}

// LatestSnapshot implements [eventstore.SnapshotRecorder]: it returns the
// snapshot with the highest position <= *upTo (any position when upTo is
// nil), and ok false when there is none.
func (s *Store) LatestSnapshot(ctx context.Context, streamID uuid.UUID, upTo *uint64) (eventstore.Record, bool, error) {
	const op = "latest snapshot"
	if err := s.usable(ctx, op); err != nil {
		return eventstore.Record{}, false, err
	}
	query := s.q.latestSnap
	args := []any{streamID.String()}
	pos := s.positionColumn()
	if upTo != nil && *upTo < math.MaxInt64 {
		query += " AND " + pos + " <= ?"
		args = append(args, int64(*upTo))
	}
	query += " ORDER BY " + pos + " DESC LIMIT 1"

	snap := eventstore.Record{StreamID: streamID}
	var p int64
	err := s.db.QueryRowContext(ctx, query, args...).Scan(&p, &snap.Topic, &snap.Data)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return eventstore.Record{}, false, nil
	case err != nil:
		return eventstore.Record{}, false, &eventstore.Error{Op: op, StreamID: streamID, Err: TranslateError(err)}
	case p < 0:
		return eventstore.Record{}, false, &eventstore.Error{Op: op, StreamID: streamID,
			Err: fmt.Errorf("%w: negative snapshot position %d", eventstore.ErrIntegrity, p)}
	}
	snap.Position = uint64(p)
	return snap, true, nil
}

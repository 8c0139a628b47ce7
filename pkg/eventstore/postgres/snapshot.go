package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/esflow/esflow/pkg/eventstore"
)

// SaveSnapshot stores a snapshot in the snapshot table, replacing one at
// the same (stream, position).
func (s *Store) SaveSnapshot(ctx context.Context, snap eventstore.Record) error {
	const op = "save snapshot"
	if err := s.checkOpen(op); err != nil {
		return err
	}
	switch {
	case snap.StreamID == uuid.Nil:
		return &eventstore.Error{Op: op, Err: fmt.Errorf("%w: nil stream id", eventstore.ErrInvalidRecord)}
	case snap.Topic == "":
		return &eventstore.Error{Op: op, StreamID: snap.StreamID, Position: snap.Position, Err: fmt.Errorf("%w: empty topic", eventstore.ErrInvalidRecord)}
	case snap.Position > math.MaxInt64:
		return &eventstore.Error{Op: op, StreamID: snap.StreamID, Position: snap.Position, Err: fmt.Errorf("%w: position exceeds the bigint range", eventstore.ErrInvalidRecord)}
	}
	data := snap.Data
	if data == nil {
		data = []byte{}
	}
	if _, err := s.pool.Exec(ctx, s.saveSnapSQL, pgtype.UUID{Bytes: snap.StreamID, Valid: true}, int64(snap.Position), snap.Topic, data); err != nil {
		return &eventstore.Error{Op: op, StreamID: snap.StreamID, Position: snap.Position, Err: TranslateError(err)}
	}
	return nil
}

// LatestSnapshot returns the snapshot of the stream with the highest
// position <= upTo (no bound when upTo is nil); ok is false when there is
// none.
func (s *Store) LatestSnapshot(ctx context.Context, streamID uuid.UUID, upTo *uint64) (eventstore.Record, bool, error) {
	const op = "latest snapshot"
	if err := s.checkOpen(op); err != nil {
		return eventstore.Record{}, false, err
	}
	bound := int64(math.MaxInt64)
	if upTo != nil && *upTo < math.MaxInt64 {
		bound = int64(*upTo)
	}
	var (
		pos   int64
		topic string
		data  []byte
	)
	err := s.pool.QueryRow(ctx, s.latestSnapSQL, pgtype.UUID{Bytes: streamID, Valid: true}, bound).Scan(&pos, &topic, &data)
	if errors.Is(err, pgx.ErrNoRows) {
		return eventstore.Record{}, false, nil
	}
	if err != nil {
		return eventstore.Record{}, false, &eventstore.Error{Op: op, StreamID: streamID, Err: TranslateError(err)}
	}
	return eventstore.Record{StreamID: streamID, Position: uint64(pos), Topic: topic, Data: data}, true, nil
}

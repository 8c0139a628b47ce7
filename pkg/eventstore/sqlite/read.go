package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"strings"

	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/eventstore"
)

// ReadStream implements [eventstore.Recorder].
func (s *Store) ReadStream(ctx context.Context, streamID uuid.UUID, q eventstore.StreamQuery) ([]eventstore.Record, error) {
	const op = "read stream"
	if err := s.usable(ctx, op); err != nil {
		return nil, err
	}
	if q.Limit < 0 {
		return nil, &eventstore.Error{Op: op, StreamID: streamID, Err: fmt.Errorf("negative limit %d", q.Limit)}
	}
	pos := s.positionColumn()
	var b strings.Builder
	b.WriteString(s.q.readStream)
	args := []any{streamID.String()}
	if q.After != nil {
		if *q.After >= math.MaxInt64 {
			return nil, nil // no storable position lies beyond
		}
		b.WriteString(" AND " + pos + " > ?")
		args = append(args, int64(*q.After))
	}
	if q.UpTo != nil && *q.UpTo < math.MaxInt64 {
		b.WriteString(" AND " + pos + " <= ?")
		args = append(args, int64(*q.UpTo))
	}
	if q.Descending {
		b.WriteString(" ORDER BY " + pos + " DESC")
	} else {
		b.WriteString(" ORDER BY " + pos + " ASC")
	}
	if q.Limit > 0 {
		b.WriteString(" LIMIT ?")
		args = append(args, q.Limit)
	}

	rows, err := s.db.QueryContext(ctx, b.String(), args...)
	if err != nil {
		return nil, &eventstore.Error{Op: op, StreamID: streamID, Err: TranslateError(err)}
	}
	defer func() { _ = rows.Close() }()
	var out []eventstore.Record
	for rows.Next() {
		r := eventstore.Record{StreamID: streamID}
		var p int64
		if err := rows.Scan(&p, &r.Topic, &r.Data); err != nil {
			return nil, &eventstore.Error{Op: op, StreamID: streamID, Err: TranslateError(err)}
		}
		if p < 0 {
			return nil, &eventstore.Error{Op: op, StreamID: streamID, Err: fmt.Errorf("%w: negative position %d", eventstore.ErrIntegrity, p)}
		}
		r.Position = uint64(p)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, &eventstore.Error{Op: op, StreamID: streamID, Err: TranslateError(err)}
	}
	return out, nil
}

// ReadNotifications implements [eventstore.Recorder]. q.Limit must be
// greater than zero. With q.Topics set, the records of other topics are
// skipped; the returned IDs stay the global ones.
func (s *Store) ReadNotifications(ctx context.Context, q eventstore.NotificationQuery) ([]eventstore.Notification, error) {
	const op = "read notifications"
	if err := s.usable(ctx, op); err != nil {
		return nil, err
	}
	if q.Limit <= 0 {
		return nil, &eventstore.Error{Op: op, Err: fmt.Errorf("limit must be greater than 0, got %d", q.Limit)}
	}
	if q.Start > math.MaxInt64 {
		return nil, nil
	}
	var b strings.Builder
	b.WriteString(s.q.readLog)
	args := []any{int64(q.Start)}
	if len(q.Topics) > 0 {
		b.WriteString(" AND " + s.topicColumn() + " IN (")
		dedup := make(map[string]bool, len(q.Topics))
		for _, t := range q.Topics {
			if dedup[t] {
				continue
			}
			dedup[t] = true
			if len(args) > 1 {
				b.WriteString(", ")
			}
			b.WriteString("?")
			args = append(args, t)
		}
		b.WriteString(")")
	}
	b.WriteString(" ORDER BY notification_id ASC LIMIT ?")
	args = append(args, q.Limit)

	rows, err := s.db.QueryContext(ctx, b.String(), args...)
	if err != nil {
		return nil, &eventstore.Error{Op: op, Err: TranslateError(err)}
	}
	defer func() { _ = rows.Close() }()
	out := make([]eventstore.Notification, 0, min(q.Limit, 256))
	for rows.Next() {
		var (
			id, p int64
			sid   string
			n     eventstore.Notification
		)
		if err := rows.Scan(&id, &sid, &p, &n.Topic, &n.Data); err != nil {
			return nil, &eventstore.Error{Op: op, Err: TranslateError(err)}
		}
		if n.StreamID, err = uuid.Parse(sid); err != nil {
			return nil, &eventstore.Error{Op: op, Err: fmt.Errorf("%w: notification %d: stream id %q: %w", eventstore.ErrIntegrity, id, sid, err)}
		}
		if id <= 0 || p < 0 {
			return nil, &eventstore.Error{Op: op, Err: fmt.Errorf("%w: notification %d has position %d", eventstore.ErrIntegrity, id, p)}
		}
		n.ID, n.Position = uint64(id), uint64(p)
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		return nil, &eventstore.Error{Op: op, Err: TranslateError(err)}
	}
	return out, nil
}

// MaxNotificationID implements [eventstore.Recorder].
func (s *Store) MaxNotificationID(ctx context.Context) (uint64, error) {
	const op = "max notification id"
	if err := s.usable(ctx, op); err != nil {
		return 0, err
	}
	var id sql.NullInt64
	if err := s.db.QueryRowContext(ctx, s.q.maxID).Scan(&id); err != nil {
		return 0, &eventstore.Error{Op: op, Err: TranslateError(err)}
	}
	if !id.Valid || id.Int64 <= 0 {
		return 0, nil
	}
	return uint64(id.Int64), nil
}

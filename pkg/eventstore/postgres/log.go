package postgres

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/esflow/esflow/pkg/eventstore"
)

// ReadNotifications returns records in global order with ID >= q.Start,
// at most q.Limit of them (see [eventstore.Recorder]). It only reads:
// ids are given by the background sequencer (NOTIFICATIONS.md). When
// records committed before the call are not numbered yet, it waits up to
// [Config.ReadWait] for them, so a caller reads its own appends; then it
// returns what is numbered. No record can later appear before an ID
// already returned.
func (s *Store) ReadNotifications(ctx context.Context, q eventstore.NotificationQuery) ([]eventstore.Notification, error) {
	const op = "read notifications"
	if err := s.checkOpen(op); err != nil {
		return nil, err
	}
	if q.Limit <= 0 {
		return nil, &eventstore.Error{Op: op, Err: fmt.Errorf("%w: notification query limit must be > 0, got %d", eventstore.ErrInvalidRecord, q.Limit)}
	}
	if q.Start > math.MaxInt64 {
		return []eventstore.Notification{}, nil
	}
	sql, args := s.notifSQL, []any{int64(q.Start), int64(q.Limit)}
	if len(q.Topics) > 0 {
		sql, args = s.notifTopicsSQL, append(args, q.Topics)
	}
	// A section below an id known to exist is complete: ids are never
	// assigned below one already visible, so it reads without a check.
	if end := q.Start + uint64(q.Limit) - 1; end < q.Start || end > s.maxKnown.Load() {
		if _, err := s.awaitCommitted(ctx, s.deadline()); err != nil {
			return nil, &eventstore.Error{Op: op, Err: TranslateError(err)}
		}
	}
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, &eventstore.Error{Op: op, Err: TranslateError(err)}
	}
	out, err := collectNotifications(rows, q.Limit)
	if err != nil {
		return nil, &eventstore.Error{Op: op, Err: TranslateError(err)}
	}
	if len(out) > 0 {
		s.sawID(out[len(out)-1].ID)
	}
	return out, nil
}

// MaxNotificationID returns the highest notification ID assigned, or 0
// when there is none. Like [Store.ReadNotifications] it first waits (up
// to [Config.ReadWait]) for records committed before the call.
func (s *Store) MaxNotificationID(ctx context.Context) (uint64, error) {
	const op = "max notification id"
	if err := s.checkOpen(op); err != nil {
		return 0, err
	}
	top, err := s.awaitCommitted(ctx, s.deadline())
	if err != nil {
		return 0, &eventstore.Error{Op: op, Err: TranslateError(err)}
	}
	return top, nil
}

// Sequence waits until every record committed before the call is
// numbered, or ctx ends. It starts this store's sequencer if it is not
// running and wakes it, unless [Config.NoSequencer]: then it waits for
// the sequencer of another process.
func (s *Store) Sequence(ctx context.Context) error {
	const op = "sequence"
	if err := s.checkOpen(op); err != nil {
		return err
	}
	s.Committed()
	if _, err := s.awaitCommitted(ctx, time.Time{}); err != nil {
		return &eventstore.Error{Op: op, Err: TranslateError(err)}
	}
	return nil
}

// deadline is when a read stops waiting for the sequencer; zero time
// means no bound, and a past one no wait.
func (s *Store) deadline() time.Time {
	if s.cfg.ReadWait < 0 {
		return time.Now()
	}
	return time.Now().Add(s.cfg.ReadWait)
}

// awaitCommitted waits until every record committed before the call is
// numbered, until deadline (zero: no deadline), or until ctx ends, and
// returns the highest id assigned when it stopped waiting. When this
// store's sequencer is active it is woken and each of its steps ends a
// wait; otherwise the check polls. Reaching the deadline is not an
// error: the caller reads what is numbered.
func (s *Store) awaitCommitted(ctx context.Context, deadline time.Time) (uint64, error) {
	q := s.seq.Load()
	var first any // the first check's snapshot, then its text
	pause := time.Millisecond
	for {
		base, err := s.readerBaseline(ctx)
		if err != nil {
			return 0, err
		}
		var (
			pending    bool
			snap, next string
			top        int64
		)
		err = s.pool.QueryRow(ctx, s.pendingSQL, first, base.xmax, base.xip).
			Scan(&pending, &snap, &next, &top)
		if err != nil {
			return 0, fmt.Errorf("check for unnumbered records: %w", err)
		}
		s.sawID(uint64(top))
		if next != "" && next != base.text {
			if b, err := parseSnapshot(next); err == nil {
				s.baseline.Store(b)
			}
		}
		if !pending || (!deadline.IsZero() && !time.Now().Before(deadline)) {
			return uint64(top), nil
		}
		if first == nil {
			first = snap
		}
		var stepped <-chan struct{}
		if q != nil && q.active.Load() {
			stepped = q.steps()
			q.hurry()
		}
		wait := pause
		if !deadline.IsZero() {
			wait = min(wait, time.Until(deadline))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, ctx.Err()
		case <-stepped:
		case <-t.C:
		}
		t.Stop()
		pause = min(2*pause, 50*time.Millisecond)
	}
}

// readerBaseline returns the newest baseline this store saw, reading it
// once when it has none.
func (s *Store) readerBaseline(ctx context.Context) (*snapshot, error) {
	if b := s.baseline.Load(); b != nil {
		return b, nil
	}
	b, err := readBaseline(ctx, s.pool, s.baselineSQL)
	if err != nil {
		return nil, err
	}
	s.baseline.CompareAndSwap(nil, b)
	return b, nil
}

// sawID records that notification id exists.
func (s *Store) sawID(id uint64) {
	for {
		cur := s.maxKnown.Load()
		if id <= cur || s.maxKnown.CompareAndSwap(cur, id) {
			return
		}
	}
}

// collectNotifications scans (id, stream, position, topic, data) rows.
func collectNotifications(rows pgx.Rows, limit int) ([]eventstore.Notification, error) {
	out := make([]eventstore.Notification, 0, min(limit, 256))
	var (
		nid   int64
		id    pgtype.UUID
		pos   int64
		topic string
		data  []byte
	)
	_, err := pgx.ForEachRow(rows, []any{&nid, &id, &pos, &topic, &data}, func() error {
		out = append(out, eventstore.Notification{
			ID:     uint64(nid),
			Record: eventstore.Record{StreamID: id.Bytes, Position: uint64(pos), Topic: topic, Data: data},
		})
		data = nil
		return nil
	})
	return out, err
}

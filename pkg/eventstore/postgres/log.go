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
	// The pending check and the read travel together; the read is a later
	// statement, so when nothing was pending it already holds everything
	// committed before the call.
	var (
		out     []eventstore.Notification
		pending bool
		snap    string
	)
	err := s.withPending(ctx, &pending, &snap, sql, args, func(rows pgx.Rows) error {
		var err error
		out, err = collectNotifications(rows, q.Limit)
		return err
	})
	if err != nil {
		return nil, &eventstore.Error{Op: op, Err: err}
	}
	if !pending || len(out) == q.Limit {
		// A full section cannot change: later ids are higher.
		return out, nil
	}
	if err := s.awaitNumbered(ctx, snap, s.deadline()); err != nil {
		return nil, &eventstore.Error{Op: op, Err: err}
	}
	rows, err := s.pool.Query(ctx, sql, args...)
	if err == nil {
		out, err = collectNotifications(rows, q.Limit)
	}
	if err != nil {
		return nil, &eventstore.Error{Op: op, Err: err}
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
	var (
		top     int64
		pending bool
		snap    string
	)
	scanMax := func(rows pgx.Rows) error {
		_, err := pgx.ForEachRow(rows, []any{&top}, func() error { return nil })
		return err
	}
	if err := s.withPending(ctx, &pending, &snap, s.maxNotifSQL, nil, scanMax); err != nil {
		return 0, &eventstore.Error{Op: op, Err: err}
	}
	if pending {
		if err := s.awaitNumbered(ctx, snap, s.deadline()); err != nil {
			return 0, &eventstore.Error{Op: op, Err: err}
		}
		if err := s.pool.QueryRow(ctx, s.maxNotifSQL).Scan(&top); err != nil {
			return 0, &eventstore.Error{Op: op, Err: err}
		}
	}
	return uint64(top), nil
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
	var (
		pending bool
		snap    string
	)
	if err := s.pool.QueryRow(ctx, s.pendingSQL, nil).Scan(&pending, &snap); err != nil {
		return &eventstore.Error{Op: op, Err: err}
	}
	if !pending {
		return nil
	}
	if err := s.awaitNumbered(ctx, snap, time.Time{}); err != nil {
		return &eventstore.Error{Op: op, Err: err}
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

// withPending sends the pending check and sql in one round trip: it
// scans the check into pending and snap, and hands sql's rows to scan.
func (s *Store) withPending(ctx context.Context, pending *bool, snap *string, sql string, args []any, scan func(pgx.Rows) error) error {
	b := &pgx.Batch{}
	b.Queue(s.pendingSQL, nil)
	b.Queue(sql, args...)
	br := s.pool.SendBatch(ctx, b)
	err := br.QueryRow().Scan(pending, snap)
	if err == nil {
		var rows pgx.Rows
		rows, err = br.Query()
		if err == nil {
			err = scan(rows)
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return err
}

// awaitNumbered waits until no record of a transaction visible in snap
// (the caller's first snapshot) is unnumbered, until deadline (zero: no
// deadline), or until ctx ends. When this store's sequencer is active it
// is woken and each of its steps ends a wait; otherwise the check polls.
// Reaching the deadline is not an error: the caller returns what is
// numbered.
func (s *Store) awaitNumbered(ctx context.Context, snap string, deadline time.Time) error {
	q := s.seq.Load()
	pause := time.Millisecond
	for {
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			return nil
		}
		var stepped <-chan struct{}
		if q != nil && q.active.Load() {
			stepped = q.steps()
			q.poke()
		}
		wait := pause
		if !deadline.IsZero() {
			wait = min(wait, time.Until(deadline))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-stepped:
		case <-t.C:
		}
		t.Stop()
		pause = min(2*pause, 50*time.Millisecond)
		var pending bool
		var next string
		if err := s.pool.QueryRow(ctx, s.pendingSQL, snap).Scan(&pending, &next); err != nil {
			return err
		}
		if !pending {
			return nil
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

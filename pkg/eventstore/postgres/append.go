package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/esflow/esflow/pkg/eventstore"
)

// batchArgs are the column arrays of one append. UUIDs travel as
// pgtype.UUID: pgx encodes them directly, without the reflection fallback
// uuid.UUID values would take.
type batchArgs struct {
	ids    []pgtype.UUID
	pos    []int64
	topics []string
	data   [][]byte
	first  []bool

	// firsts are the first records of each stream, in batch order.
	firstIDs []pgtype.UUID
	firstPos []int64
}

func newBatchArgs(records []eventstore.Record) (*batchArgs, error) {
	a := &batchArgs{
		ids:    make([]pgtype.UUID, len(records)),
		pos:    make([]int64, len(records)),
		topics: make([]string, len(records)),
		data:   make([][]byte, len(records)),
		first:  make([]bool, len(records)),
	}
	seen := make(map[uuid.UUID]struct{}, 4)
	for i, r := range records {
		if r.Position > math.MaxInt64 {
			return nil, &eventstore.Error{Op: "append", StreamID: r.StreamID, Position: r.Position,
				Err: fmt.Errorf("%w: position exceeds the bigint range", eventstore.ErrInvalidRecord)}
		}
		id := pgtype.UUID{Bytes: r.StreamID, Valid: true}
		a.ids[i] = id
		a.pos[i] = int64(r.Position)
		a.topics[i] = r.Topic
		a.data[i] = r.Data
		if a.data[i] == nil {
			a.data[i] = []byte{} // data is NOT NULL; nil means empty
		}
		if _, ok := seen[r.StreamID]; !ok {
			seen[r.StreamID] = struct{}{}
			a.first[i] = true
			a.firstIDs = append(a.firstIDs, id)
			a.firstPos = append(a.firstPos, int64(r.Position))
		}
	}
	return a, nil
}

func (s *Store) insertArgs(a *batchArgs) []any {
	return []any{a.ids, a.pos, a.topics, a.data, a.first}
}

// Append writes the records atomically (see [eventstore.Recorder]). It
// costs one round trip for BEGIN and the INSERT, pipelined, plus the
// COMMIT.
func (s *Store) Append(ctx context.Context, records []eventstore.Record) error {
	if err := s.checkOpen("append"); err != nil {
		return err
	}
	if err := eventstore.ValidateBatch(records); err != nil {
		return err
	}
	if len(records) == 0 {
		return nil
	}
	a, err := newBatchArgs(records)
	if err != nil {
		return err
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return &eventstore.Error{Op: "append", Err: fmt.Errorf("acquire connection: %w", TranslateError(err))}
	}
	defer conn.Release() // the pool discards a connection left inside a transaction

	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(s.insertSQL, s.insertArgs(a)...)
	br := conn.SendBatch(ctx, b)
	_, beginErr := br.Exec()
	tag, insErr := br.Exec()
	closeErr := br.Close()
	if beginErr != nil || insErr != nil || closeErr != nil {
		rollback(ctx, conn.Conn())
		err := errors.Join(beginErr, insErr, closeErr)
		if insErr != nil {
			err = insErr
		}
		return s.appendError(records, a, err)
	}
	if int(tag.RowsAffected()) != len(records) {
		err := s.shortfall(ctx, conn.Conn(), records, a, tag.RowsAffected())
		rollback(ctx, conn.Conn())
		return err
	}
	if _, err := conn.Exec(ctx, "COMMIT"); err != nil {
		rollback(ctx, conn.Conn())
		return s.appendError(records, a, fmt.Errorf("commit: %w", err))
	}
	s.Committed()
	return nil
}

// AppendTx writes the records inside tx, with the same checks as
// [Store.Append], so that callers can add their own rows (an outbox, for
// instance) atomically with the events. On any error the caller must roll
// tx back: on a conflict some of the records may have been inserted.
// After committing tx, call [Store.Committed] so the sequencer numbers
// the records at once rather than at its next poll.
func (s *Store) AppendTx(ctx context.Context, tx pgx.Tx, records []eventstore.Record) error {
	if err := s.checkOpen("append"); err != nil {
		return err
	}
	s.startSequencer()
	if err := eventstore.ValidateBatch(records); err != nil {
		return err
	}
	if len(records) == 0 {
		return nil
	}
	a, err := newBatchArgs(records)
	if err != nil {
		return err
	}
	tag, err := tx.Exec(ctx, s.insertSQL, s.insertArgs(a)...)
	if err != nil {
		return s.appendError(records, a, err)
	}
	if int(tag.RowsAffected()) != len(records) {
		return s.shortfall(ctx, tx, records, a, tag.RowsAffected())
	}
	return nil
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// shortfall builds the conflict error when a stream's first record was
// refused because the stream does not reach its position. It runs inside
// the (still usable) transaction to name the stream.
func (s *Store) shortfall(ctx context.Context, q querier, records []eventstore.Record, a *batchArgs, inserted int64) error {
	cause := fmt.Errorf("%d of %d records inserted: a stream does not reach the expected version", inserted, len(records))
	var id pgtype.UUID
	var pos int64
	if err := q.QueryRow(ctx, s.conflictSQL, a.firstIDs, a.firstPos).Scan(&id, &pos); err == nil && id.Valid {
		return eventstore.ConcurrencyError(uuid.UUID(id.Bytes), uint64(pos), cause)
	}
	return eventstore.ConcurrencyError(records[0].StreamID, records[0].Position, cause)
}

// appendError maps a failed insert: a unique violation on the stream key
// is a concurrency conflict, everything else is wrapped as is.
func (s *Store) appendError(records []eventstore.Record, a *batchArgs, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" &&
		(pgErr.ConstraintName == "" || pgErr.ConstraintName == s.names.rawStreamKey) {
		id, pos := conflictingStream(records, pgErr.Detail)
		return eventstore.ConcurrencyError(id, pos, fmt.Errorf("position already taken: %w", err))
	}
	return &eventstore.Error{Op: "append", Err: TranslateError(err)}
}

// conflictingStream names the stream of a unique violation: the first
// stream of the batch whose id appears in the error detail ("Key (…)=(id,
// position) already exists."), at its first position in the batch. It
// falls back to the batch's first record.
func conflictingStream(records []eventstore.Record, detail string) (uuid.UUID, uint64) {
	firstPos := make(map[uuid.UUID]uint64, 4)
	var order []uuid.UUID
	for _, r := range records {
		if _, ok := firstPos[r.StreamID]; !ok {
			firstPos[r.StreamID] = r.Position
			order = append(order, r.StreamID)
		}
	}
	if len(order) > 1 && detail != "" {
		for _, id := range order {
			if strings.Contains(detail, id.String()) {
				return id, firstPos[id]
			}
		}
	}
	return order[0], firstPos[order[0]]
}

// rollback ends a transaction left open on conn. If that fails the
// connection is closed, so the pool discards it.
func rollback(ctx context.Context, conn *pgx.Conn) {
	if conn.IsClosed() || conn.PgConn().TxStatus() == 'I' {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, "ROLLBACK"); err != nil {
		_ = conn.Close(ctx)
	}
}

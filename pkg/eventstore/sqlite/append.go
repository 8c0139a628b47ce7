package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"

	"github.com/google/uuid"
	msqlite "modernc.org/sqlite"

	"github.com/esflow/esflow/pkg/eventstore"
)

// SQLite result codes the Store translates (https://sqlite.org/rescode.html).
const (
	codeConstraint           = 19
	codeConstraintPrimaryKey = 1555
	codeConstraintUnique     = 2067
)

const savepoint = "esflow_append"

// isUniqueViolation reports whether err is SQLite refusing a row because
// its key already exists.
func isUniqueViolation(err error) bool {
	var se *msqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() {
	case codeConstraintUnique, codeConstraintPrimaryKey:
		return true
	}
	return false
}

// isConstraint reports whether err is any SQLite constraint violation.
func isConstraint(err error) bool {
	var se *msqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == codeConstraint
}

// checkBatch runs the checks every append makes before touching the
// database: [eventstore.ValidateBatch], and positions that fit SQLite's
// signed 64-bit INTEGER.
func checkBatch(records []eventstore.Record) error {
	if err := eventstore.ValidateBatch(records); err != nil {
		return err
	}
	for _, r := range records {
		if r.Position > math.MaxInt64 {
			return &eventstore.Error{Op: "append", StreamID: r.StreamID, Position: r.Position,
				Err: fmt.Errorf("%w: position exceeds %d", eventstore.ErrInvalidRecord, int64(math.MaxInt64))}
		}
	}
	return nil
}

// acquireWrite takes the Store's in-process write slot, honouring ctx.
func (s *Store) acquireWrite(ctx context.Context, op string) (release func(), err error) {
	select {
	case s.writeSlot <- struct{}{}:
		return func() { <-s.writeSlot }, nil
	case <-ctx.Done():
		return nil, &eventstore.Error{Op: op, Err: ctx.Err()}
	}
}

// Append implements [eventstore.Recorder]. The whole batch is written in
// one transaction, or nothing is: a position that already exists, or a
// first position that is not the stream's current length, yields an
// error matching [eventstore.ErrConcurrency].
func (s *Store) Append(ctx context.Context, records []eventstore.Record) error {
	const op = "append"
	if err := s.usable(ctx, op); err != nil {
		return err
	}
	if err := checkBatch(records); err != nil {
		return err
	}
	if len(records) == 0 {
		return nil
	}
	release, err := s.acquireWrite(ctx, op)
	if err != nil {
		return err
	}
	defer release()

	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return &eventstore.Error{Op: op, Err: fmt.Errorf("begin: %w", TranslateError(err))}
	}
	if err := s.insertRecords(ctx, tx, records); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return &eventstore.Error{Op: op, Err: fmt.Errorf("commit: %w", TranslateError(err))}
	}
	return nil
}

// AppendTx writes records inside the caller's transaction, with the same
// checks and errors as [Store.Append]; they become visible when the
// caller commits. Use it to store other rows (an outbox, a read model)
// atomically with the events. tx should come from [Store.BeginTx] so it
// holds the write lock from its start.
//
// On error AppendTx undoes its own writes (it works inside a savepoint),
// so the transaction is left as it was; the caller decides whether to
// roll it back.
func (s *Store) AppendTx(ctx context.Context, tx *sql.Tx, records []eventstore.Record) error {
	const op = "append"
	if err := s.usable(ctx, op); err != nil {
		return err
	}
	if tx == nil {
		return &eventstore.Error{Op: op, Err: errors.New("nil *sql.Tx")}
	}
	if err := checkBatch(records); err != nil {
		return err
	}
	if len(records) == 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, "SAVEPOINT "+savepoint); err != nil {
		return &eventstore.Error{Op: op, Err: fmt.Errorf("savepoint: %w", err)}
	}
	if err := s.insertRecords(ctx, tx, records); err != nil {
		// Undo this call's rows only. If that fails too the transaction
		// is already unusable and the caller's rollback cleans up.
		undo := context.WithoutCancel(ctx)
		if _, rbErr := tx.ExecContext(undo, "ROLLBACK TO "+savepoint); rbErr == nil {
			_, _ = tx.ExecContext(undo, "RELEASE "+savepoint)
		}
		return err
	}
	if _, err := tx.ExecContext(ctx, "RELEASE "+savepoint); err != nil {
		return &eventstore.Error{Op: op, Err: fmt.Errorf("release savepoint: %w", err)}
	}
	return nil
}

// insertRecords inserts a checked, non-empty batch and verifies the
// expected version of each stream. It inserts first and checks after, so
// the transaction's first statement is a write: even a transaction begun
// without BEGIN IMMEDIATE takes the write lock before it reads anything,
// and cannot hit a read-to-write lock upgrade conflict.
//
// Within the (serialised) write transaction:
//   - an existing (stream, position) makes the insert fail on the UNIQUE
//     constraint, which is reported as a concurrency conflict;
//   - for each stream whose first position p is > 0, the highest position
//     below p must be p-1. Streams are always contiguous from 0 (every
//     append enforces this), so with p itself free, that means the stream
//     had exactly p records: p is its expected version.
func (s *Store) insertRecords(ctx context.Context, tx *sql.Tx, records []eventstore.Record) error {
	const op = "append"
	stmt, err := tx.PrepareContext(ctx, s.q.insert)
	if err != nil {
		return &eventstore.Error{Op: op, Err: fmt.Errorf("prepare insert: %w", TranslateError(err))}
	}
	defer func() { _ = stmt.Close() }()

	firsts := make([]eventstore.Record, 0, 2)
	seen := make(map[uuid.UUID]bool, 2)
	for _, r := range records {
		if !seen[r.StreamID] {
			seen[r.StreamID] = true
			firsts = append(firsts, r)
		}
		data := r.Data
		if data == nil {
			data = []byte{}
		}
		if _, err := stmt.ExecContext(ctx, r.StreamID.String(), int64(r.Position), r.Topic, data); err != nil {
			if isUniqueViolation(err) {
				return eventstore.ConcurrencyError(r.StreamID, r.Position, errors.New("position already recorded"))
			}
			if isConstraint(err) {
				return &eventstore.Error{Op: op, StreamID: r.StreamID, Position: r.Position,
					Err: fmt.Errorf("%w: %w", eventstore.ErrInvalidRecord, err)}
			}
			return &eventstore.Error{Op: op, StreamID: r.StreamID, Position: r.Position, Err: fmt.Errorf("insert: %w", TranslateError(err))}
		}
	}

	for _, r := range firsts {
		if r.Position == 0 {
			continue
		}
		var prev sql.NullInt64
		if err := tx.QueryRowContext(ctx, s.q.streamMaxPrev, r.StreamID.String(), int64(r.Position)).Scan(&prev); err != nil {
			return &eventstore.Error{Op: op, StreamID: r.StreamID, Position: r.Position, Err: fmt.Errorf("read stream length: %w", err)}
		}
		if !prev.Valid || prev.Int64 != int64(r.Position)-1 {
			var have int64
			if prev.Valid {
				have = prev.Int64 + 1
			}
			return eventstore.ConcurrencyError(r.StreamID, r.Position, fmt.Errorf("stream has %d records", have))
		}
	}
	return nil
}

package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"

	drv "github.com/go-sql-driver/mysql"
	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/eventstore"
)

// Server error numbers the Store translates.
const (
	errDupEntry    = 1062 // ER_DUP_ENTRY
	errDataTooLong = 1406 // ER_DATA_TOO_LONG
)

func mysqlErrno(err error) uint16 {
	var me *drv.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

// checkBatch runs the checks every append makes before touching the
// database.
func checkBatch(records []eventstore.Record) error {
	if err := eventstore.ValidateBatch(records); err != nil {
		return err
	}
	for _, r := range records {
		if r.Position > math.MaxInt64 {
			return &eventstore.Error{Op: "append", StreamID: r.StreamID, Position: r.Position,
				Err: fmt.Errorf("%w: position exceeds the BIGINT range", eventstore.ErrInvalidRecord)}
		}
	}
	return nil
}

// firsts returns the first record of each stream, in batch order.
func firsts(records []eventstore.Record) []eventstore.Record {
	out := make([]eventstore.Record, 0, 2)
	seen := make(map[uuid.UUID]struct{}, 2)
	for _, r := range records {
		if _, ok := seen[r.StreamID]; !ok {
			seen[r.StreamID] = struct{}{}
			out = append(out, r)
		}
	}
	return out
}

// Append implements [eventstore.Recorder]: the batch is written in one
// transaction, or nothing is. A position that exists, or a first position
// beyond a stream's end, yields an error matching
// [eventstore.ErrConcurrency] naming the stream.
//
// Round trips: the predecessor check (only for streams not starting at
// 0; before the transaction), BEGIN, the counter UPDATE, the INSERT and
// COMMIT. Appends to one table are serialised from the counter UPDATE to
// the COMMIT (see DESIGN.md).
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
	// Records are never deleted, so a predecessor seen here is still
	// there at commit: the check needs neither the transaction nor the
	// lock, and keeps a read out of the serialised section.
	if err := s.checkPredecessors(ctx, nil, records); err != nil {
		return err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return &eventstore.Error{Op: op, Err: fmt.Errorf("begin: %w", TranslateError(err))}
	}
	if err := s.insert(ctx, tx, records); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return &eventstore.Error{Op: op, Err: fmt.Errorf("commit: %w", TranslateError(err))}
	}
	return nil
}

// BeginTx begins a transaction on the Store's pool, for [Store.AppendTx].
func (s *Store) BeginTx(ctx context.Context) (*sql.Tx, error) {
	if err := s.usable(ctx, "begin"); err != nil {
		return nil, err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, &eventstore.Error{Op: "begin", Err: TranslateError(err)}
	}
	return tx, nil
}

// AppendTx writes records inside the caller's transaction with the same
// checks and errors as [Store.Append]; they become visible when the
// caller commits. Use it to store other rows (an outbox) atomically with
// the events. From this call until the transaction ends, other appends
// to the table wait, and so do readers of the notification log that reach
// its records: keep the rest of the transaction short. On error the
// caller must roll tx back.
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
	if err := s.checkPredecessors(ctx, tx, records); err != nil {
		return err
	}
	return s.insert(ctx, tx, records)
}

// checkPredecessors verifies, for each stream whose first position p is
// above 0, that position p-1 exists. With the unique key refusing an
// existing p, that means the stream has exactly p records. tx may be nil.
func (s *Store) checkPredecessors(ctx context.Context, tx *sql.Tx, records []eventstore.Record) error {
	for _, r := range firsts(records) {
		if r.Position == 0 {
			continue
		}
		found, err := s.exists(ctx, tx, r.StreamID, r.Position-1)
		if err != nil {
			return &eventstore.Error{Op: "append", StreamID: r.StreamID, Position: r.Position, Err: fmt.Errorf("read stream length: %w", TranslateError(err))}
		}
		if !found {
			return eventstore.ConcurrencyError(r.StreamID, r.Position, fmt.Errorf("stream does not reach position %d", r.Position))
		}
	}
	return nil
}

// exists reports whether the record (id, pos) exists, reading in tx when
// it is not nil.
func (s *Store) exists(ctx context.Context, tx *sql.Tx, id uuid.UUID, pos uint64) (bool, error) {
	var rows *sql.Rows
	var err error
	if tx != nil {
		var st *sql.Stmt
		if st, err = s.Stmt(ctx, tx, s.q.exists); err != nil {
			return false, err
		}
		rows, err = st.QueryContext(ctx, id[:], int64(pos))
	} else {
		rows, err = s.query(ctx, s.q.exists, id[:], int64(pos))
	}
	if err != nil {
		return false, err
	}
	defer func() { _ = rows.Close() }()
	found := rows.Next()
	return found, rows.Err()
}

// insert takes the next notification ids from the counter row (locking
// it until tx ends) and inserts the records with them.
func (s *Store) insert(ctx context.Context, tx *sql.Tx, records []eventstore.Record) error {
	const op = "append"
	bump, err := s.Stmt(ctx, tx, s.q.bump)
	if err != nil {
		return &eventstore.Error{Op: op, Err: TranslateError(err)}
	}
	res, err := bump.ExecContext(ctx, len(records), s.schema.Table)
	if err != nil {
		return &eventstore.Error{Op: op, Err: fmt.Errorf("take notification ids: %w", TranslateError(err))}
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return &eventstore.Error{Op: op, Err: fmt.Errorf("take notification ids: no counter row for %q in %s (run Migrate): %v", s.schema.Table, CountersTable, err)}
	}
	last, err := res.LastInsertId()
	if err != nil {
		return &eventstore.Error{Op: op, Err: fmt.Errorf("take notification ids: %w", TranslateError(err))}
	}
	first := last - int64(len(records)) + 1
	args := make([]any, 0, 5*len(records))
	for i, r := range records {
		data := r.Data
		if data == nil {
			data = []byte{} // NOT NULL; nil means empty
		}
		args = append(args, first+int64(i), r.StreamID[:], int64(r.Position), r.Topic, data)
	}
	ins, err := s.Stmt(ctx, tx, s.q.insert(len(records)))
	if err != nil {
		return &eventstore.Error{Op: op, Err: TranslateError(err)}
	}
	if _, err := ins.ExecContext(ctx, args...); err != nil {
		switch mysqlErrno(err) {
		case errDupEntry:
			id, pos := s.takenPosition(ctx, tx, records)
			return eventstore.ConcurrencyError(id, pos, fmt.Errorf("position already recorded: %w", err))
		case errDataTooLong:
			return &eventstore.Error{Op: op, Err: fmt.Errorf("%w: %w", eventstore.ErrInvalidRecord, err)}
		}
		return &eventstore.Error{Op: op, Err: fmt.Errorf("insert: %w", TranslateError(err))}
	}
	return nil
}

// takenPosition names the conflict of a duplicate-key failure: the first
// stream of the batch whose first position exists, falling back to the
// batch's first record. tx is still usable: MariaDB rolls back only the
// failed statement.
func (s *Store) takenPosition(ctx context.Context, tx *sql.Tx, records []eventstore.Record) (uuid.UUID, uint64) {
	fs := firsts(records)
	if len(fs) > 1 {
		for _, r := range fs {
			if found, err := s.exists(ctx, tx, r.StreamID, r.Position); err == nil && found {
				return r.StreamID, r.Position
			}
		}
	}
	return fs[0].StreamID, fs[0].Position
}

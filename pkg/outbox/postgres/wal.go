package postgres

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/outbox"
)

// The WAL mode's writer side: each message becomes a transactional
// logical-decoding message, pg_logical_emit_message(true, prefix, bytes),
// emitted by the statement that inserts the events, instead of an outbox
// row. Decoding delivers it at the transaction's commit, in commit order,
// or never if the transaction aborts: the same atomicity as the row, and
// no INSERT, SELECT, DELETE or vacuum of the outbox table. See
// WAL.md beside this file.

// walFormat is the first byte of a logical message's content. One
// message carries all the outbox messages of one append:
//
//	0x02 uvarint(count) { uvarint(len(topic)) topic  key  value  headers }…
//
// where key and value are uvarint(len+1) bytes (0 for nil) and headers is
// uvarint(len) of outbox.EncodeHeaders' form. One logical message per
// transaction rather than one per outbox message: decoding costs the
// walsender per WAL record, and halving the records of a save of 100
// events (100 event rows and 1 message instead of 100 and 100) is what
// the drain of W2 is bound by (see WAL.md, "Writing").
const walFormat = 0x02

// encodeWAL returns the logical message content of msgs.
func encodeWAL(msgs []outbox.Message) ([]byte, error) {
	n := 1 + binary.MaxVarintLen32
	hs := make([][]byte, len(msgs))
	for i := range msgs {
		m := &msgs[i]
		if m.Topic == "" {
			return nil, fmt.Errorf("%w: message %d has no topic", outbox.ErrUnroutable, i)
		}
		h, err := outbox.EncodeHeaders(m.Headers)
		if err != nil {
			return nil, fmt.Errorf("message %d: %w", i, err)
		}
		hs[i] = h
		n += 4*binary.MaxVarintLen32 + len(m.Topic) + len(m.Key) + len(m.Value) + len(h)
	}
	b := make([]byte, 0, n)
	b = append(b, walFormat)
	b = binary.AppendUvarint(b, uint64(len(msgs)))
	for i := range msgs {
		m := &msgs[i]
		b = binary.AppendUvarint(b, uint64(len(m.Topic)))
		b = append(b, m.Topic...)
		b = appendNullable(b, m.Key)
		b = appendNullable(b, m.Value)
		b = binary.AppendUvarint(b, uint64(len(hs[i])))
		b = append(b, hs[i]...)
	}
	return b, nil
}

func appendNullable(b, v []byte) []byte {
	if v == nil {
		return append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(v))+1)
	return append(b, v...)
}

var errWALFormat = errors.New("outbox/postgres: malformed logical message")

// decodeWAL reverses encodeWAL, appending the messages to dst. Their byte
// slices alias b.
func decodeWAL(dst []outbox.Message, b []byte, a *arena) ([]outbox.Message, error) {
	if len(b) == 0 || b[0] != walFormat {
		return dst, errWALFormat
	}
	count, k := binary.Uvarint(b[1:])
	if k <= 0 || count > uint64(len(b)) {
		return dst, errWALFormat
	}
	b = b[1+k:]
	for range count {
		var m outbox.Message
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return dst, errWALFormat
		}
		m.Topic, b = string(b[k:k+int(n)]), b[k+int(n):]
		var err error
		if m.Key, b, err = nullable(b); err != nil {
			return dst, err
		}
		if m.Value, b, err = nullable(b); err != nil {
			return dst, err
		}
		n, k = binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return dst, errWALFormat
		}
		if n > 0 {
			if m.Headers, err = decodeHeaders(b[k:k+int(n)], a); err != nil {
				return dst, err
			}
		}
		b = b[k+int(n):]
		dst = append(dst, m)
	}
	if len(b) != 0 {
		return dst, errWALFormat
	}
	return dst, nil
}

func nullable(b []byte) (v, rest []byte, err error) {
	n, k := binary.Uvarint(b)
	switch {
	case k <= 0 || n > uint64(len(b)-k)+1:
		return nil, nil, errWALFormat
	case n == 0:
		return nil, b[k:], nil
	}
	l := int(n - 1)
	return b[k : k+l : k+l], b[k+l:], nil
}

// walQueries are the WAL mode's append statements.
type walQueries struct {
	// both emits $2 and inserts the records in $3…$7 (recordArgs).
	both string
	// msgs only emits $2.
	msgs string
	// values[r] is valuesSQL's records statement with the message
	// emitted from an InitPlan of its RETURNING clause, referenced so
	// that it runs; parameters: the records', then the prefix and the
	// content. valuesUnchecked is the same without the chain check.
	values, valuesUnchecked [maxValuesRows + 1]string
}

const emitSQL = `SELECT pg_logical_emit_message(true, $1::text, $2::bytea)`

func buildWALQueries(s eventstore.Schema, table string) walQueries {
	w := walQueries{
		msgs: emitSQL,
		// The records insert is appendBoth's (see there), with its
		// parameters moved to $3…$7.
		both: `WITH m AS (
    ` + emitSQL + `
), e AS (
    ` + recordsInsert(s, table, 3) + `
)
SELECT (SELECT count(*) FROM e), (SELECT count(*) FROM m)`,
	}
	for r := 1; r <= maxValuesRows; r++ {
		w.values[r] = valuesEmitSQL(valuesSQL(s, table, r, 0, true), 5*r)
		w.valuesUnchecked[r] = valuesEmitSQL(valuesSQL(s, table, r, 0, false), 4*r)
	}
	return w
}

// valuesEmitSQL adds the emitted message to a records statement with p
// parameters. A CTE that is only SELECTed runs only if referenced; the
// RETURNING clause's scalar subquery is an InitPlan, evaluated once.
func valuesEmitSQL(records string, p int) string {
	return "WITH m AS (\n    SELECT pg_logical_emit_message(true, $" + strconv.Itoa(p+1) + "::text, $" + strconv.Itoa(p+2) + "::bytea)\n)\n" +
		records + "\nRETURNING (SELECT count(*) FROM m)"
}

// appendWAL is AppendWithOutbox in the WAL mode: the records and one
// logical message holding msgs, in one statement.
func (o *Outbox) appendWAL(ctx context.Context, records []eventstore.Record, msgs []outbox.Message) error {
	content, err := encodeWAL(msgs)
	if err != nil {
		return fmt.Errorf("outbox/postgres: append: %w", err)
	}
	if len(records) == 0 {
		if _, err := o.pool.Exec(ctx, o.wq.msgs, o.prefix, content); err != nil {
			return fmt.Errorf("outbox/postgres: append messages: %w", err)
		}
		o.committed()
		return nil
	}
	if len(records) <= maxValuesRows {
		args, check, err := valuesArgs(records, nil)
		if err != nil {
			return err
		}
		sql := o.wq.valuesUnchecked[len(records)]
		if check {
			sql = o.wq.values[len(records)]
		}
		tag, err := o.pool.Exec(ctx, sql, append(args, o.prefix, content)...)
		if err != nil {
			return o.appendError(records, err)
		}
		if n := tag.RowsAffected(); n != int64(len(records)) {
			return &eventstore.Error{Op: "append", Err: fmt.Errorf("outbox/postgres: wrote %d of %d records", n, len(records))}
		}
		o.committed()
		return nil
	}
	rargs, err := recordArgs(records)
	if err != nil {
		return err
	}
	var nEvents, nMsgs int64
	err = o.pool.QueryRow(ctx, o.wq.both, append([]any{o.prefix, content}, rargs...)...).Scan(&nEvents, &nMsgs)
	if err != nil {
		return o.appendError(records, err)
	}
	if nEvents != int64(len(records)) || nMsgs != 1 {
		return &eventstore.Error{Op: "append", Err: fmt.Errorf("outbox/postgres: wrote %d of %d records and %d of 1 logical messages", nEvents, len(records), nMsgs)}
	}
	o.committed()
	return nil
}

// migrateWAL creates the WAL mode's publication and replication slot if
// they are missing. The slot must exist before the first message is
// emitted: decoding starts at the slot's creation, and a message emitted
// before it would never be read. Creating a logical slot waits for the
// transactions running at that moment to end.
func (o *Outbox) migrateWAL(ctx context.Context) error {
	fail := func(err error) error { return fmt.Errorf("outbox/postgres: migrate WAL mode: %w", err) }
	var level string
	if err := o.pool.QueryRow(ctx, `SHOW wal_level`).Scan(&level); err != nil {
		return fail(err)
	}
	if level != "logical" {
		return fail(fmt.Errorf("%w: wal_level is %q, the WAL mode needs logical", ErrNoLogicalWAL, level))
	}
	var exists bool
	if err := o.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, o.publication).Scan(&exists); err != nil {
		return fail(err)
	}
	if !exists {
		// An empty publication: pgoutput then sends no row changes, only
		// the logical messages (with messages 'true').
		if _, err := o.pool.Exec(ctx, `CREATE PUBLICATION `+eventstore.Quote(o.publication)); err != nil && !isDuplicate(err) {
			return fail(fmt.Errorf("create publication: %w", err))
		}
	}
	if err := o.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, o.slot).Scan(&exists); err != nil {
		return fail(err)
	}
	if !exists {
		if _, err := o.pool.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, o.slot); err != nil && !isDuplicate(err) {
			return fail(fmt.Errorf("create replication slot: %w", err))
		}
	}
	return nil
}

// ErrNoLogicalWAL reports a WAL-mode outbox on a server without
// wal_level=logical.
var ErrNoLogicalWAL = errors.New("outbox/postgres: logical decoding unavailable")

// isDuplicate reports SQLSTATE 42710 (duplicate_object), raised when a
// concurrent Migrate created the publication or slot first.
func isDuplicate(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42710"
}

package postgres

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

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

// walFormat is the first byte of an encoded message:
//
//	0x01 uvarint(len(topic)) topic  key  value  headers
//
// where key and value are uvarint(len+1) bytes (0 for nil) and headers is
// uvarint(len) of outbox.EncodeHeaders' form.
const walFormat = 0x01

// encodeWAL returns the logical message content of m.
func encodeWAL(m *outbox.Message) ([]byte, error) {
	h, err := outbox.EncodeHeaders(m.Headers)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, 1+4*binary.MaxVarintLen32+len(m.Topic)+len(m.Key)+len(m.Value)+len(h))
	b = append(b, walFormat)
	b = binary.AppendUvarint(b, uint64(len(m.Topic)))
	b = append(b, m.Topic...)
	b = appendNullable(b, m.Key)
	b = appendNullable(b, m.Value)
	b = binary.AppendUvarint(b, uint64(len(h)))
	return append(b, h...), nil
}

func appendNullable(b, v []byte) []byte {
	if v == nil {
		return append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(v))+1)
	return append(b, v...)
}

var errWALFormat = errors.New("outbox/postgres: malformed logical message")

// decodeWAL reverses encodeWAL. The message's byte slices alias b.
func decodeWAL(b []byte, a *arena) (outbox.Message, error) {
	var m outbox.Message
	if len(b) == 0 || b[0] != walFormat {
		return m, errWALFormat
	}
	b = b[1:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return m, errWALFormat
	}
	m.Topic, b = string(b[k:k+int(n)]), b[k+int(n):]
	var err error
	if m.Key, b, err = nullable(b); err != nil {
		return m, err
	}
	if m.Value, b, err = nullable(b); err != nil {
		return m, err
	}
	n, k = binary.Uvarint(b)
	if k <= 0 || n != uint64(len(b)-k) {
		return m, errWALFormat
	}
	if n > 0 {
		if m.Headers, err = decodeHeaders(b[k:], a); err != nil {
			return m, err
		}
	}
	return m, nil
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
	// both emits $2 (an array of contents) and inserts the records in
	// $3…$7 (recordArgs).
	both string
	// msgs only emits $2.
	msgs string
	// values[r][m] are valuesSQL's records statement with m messages
	// emitted from an InitPlan of its RETURNING clause, referenced so
	// that it runs; parameters: the records', then the prefix, then the
	// m contents. valuesUnchecked is the same without the chain check.
	values, valuesUnchecked [maxValuesRows + 1][maxValuesRows + 1]string
}

// emitSQL emits the messages in order. unnest returns the array in
// order, and a volatile function in the target list is evaluated after
// the sort in any case.
const emitSQL = `SELECT pg_logical_emit_message(true, $1::text, c.content)
    FROM unnest($2::bytea[]) WITH ORDINALITY AS c(content, ord)
    ORDER BY c.ord`

func buildWALQueries(s eventstore.Schema, table string) walQueries {
	q := eventstore.Quote
	ev, sid, pos, top, dat := q(s.Table), q(s.StreamIDColumn), q(s.PositionColumn), q(s.TopicColumn), q(s.DataColumn)
	guard := q(table + "_chain_guard")
	w := walQueries{
		msgs: emitSQL,
		// The records insert is appendBoth's (see there), with its
		// parameters moved to $3…$7.
		both: `WITH m AS (
    ` + emitSQL + `
), e AS (
    INSERT INTO ` + ev + ` (` + sid + `, ` + pos + `, ` + top + `, ` + dat + `)
    SELECT r.sid,
        CASE WHEN NOT r.first OR r.pos = 0 OR (
            SELECT true FROM ` + ev + ` x WHERE x.` + sid + ` = r.sid AND x.` + pos + ` = r.pos - 1)
        THEN r.pos ELSE ` + guard + `(r.sid, r.pos) END,
        r.topic, r.data
    FROM unnest($3::uuid[], $4::bigint[], $5::text[], $6::bytea[], $7::bool[]) WITH ORDINALITY AS r(sid, pos, topic, data, first, ord)
    ORDER BY r.ord
    RETURNING 1
)
SELECT (SELECT count(*) FROM e), (SELECT count(*) FROM m)`,
	}
	for r := 1; r <= maxValuesRows; r++ {
		for m := 1; m <= maxValuesRows; m++ {
			w.values[r][m] = valuesEmitSQL(valuesSQL(s, table, r, 0, true), 5*r, m)
			w.valuesUnchecked[r][m] = valuesEmitSQL(valuesSQL(s, table, r, 0, false), 4*r, m)
		}
	}
	return w
}

// valuesEmitSQL adds m emitted messages to a records statement with p
// parameters. A CTE that is only SELECTed runs only if referenced; the
// RETURNING clause's scalar subquery is an InitPlan, evaluated once.
func valuesEmitSQL(records string, p, m int) string {
	var b strings.Builder
	b.WriteString("WITH m AS (\n    SELECT pg_logical_emit_message(true, $")
	b.WriteString(strconv.Itoa(p + 1))
	b.WriteString("::text, v.content) FROM (VALUES ")
	for i := range m {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "(%d, $%d::bytea)", i+1, p+2+i)
	}
	b.WriteString(") AS v(ord, content)")
	if m > 1 {
		b.WriteString(" ORDER BY v.ord")
	}
	b.WriteString("\n)\n")
	b.WriteString(records)
	b.WriteString("\nRETURNING (SELECT count(*) FROM m)")
	return b.String()
}

// walContents encodes the messages of one append.
func walContents(msgs []outbox.Message) ([][]byte, error) {
	out := make([][]byte, len(msgs))
	for i := range msgs {
		if msgs[i].Topic == "" {
			return nil, fmt.Errorf("%w: message %d has no topic", outbox.ErrUnroutable, i)
		}
		c, err := encodeWAL(&msgs[i])
		if err != nil {
			return nil, fmt.Errorf("message %d: %w", i, err)
		}
		out[i] = c
	}
	return out, nil
}

// appendWAL is AppendWithOutbox in the WAL mode.
func (o *Outbox) appendWAL(ctx context.Context, records []eventstore.Record, msgs []outbox.Message) error {
	contents, err := walContents(msgs)
	if err != nil {
		return fmt.Errorf("outbox/postgres: append: %w", err)
	}
	if len(records) == 0 {
		if _, err := o.pool.Exec(ctx, o.wq.msgs, o.prefix, contents); err != nil {
			return fmt.Errorf("outbox/postgres: append messages: %w", err)
		}
		o.committed()
		return nil
	}
	if len(records) <= maxValuesRows && len(msgs) <= maxValuesRows {
		args, check, err := valuesArgs(records, nil)
		if err != nil {
			return err
		}
		sql := o.wq.valuesUnchecked[len(records)][len(msgs)]
		if check {
			sql = o.wq.values[len(records)][len(msgs)]
		}
		args = append(args, o.prefix)
		for _, c := range contents {
			args = append(args, c)
		}
		tag, err := o.pool.Exec(ctx, sql, args...)
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
	err = o.pool.QueryRow(ctx, o.wq.both, append([]any{o.prefix, contents}, rargs...)...).Scan(&nEvents, &nMsgs)
	if err != nil {
		return o.appendError(records, err)
	}
	if nEvents != int64(len(records)) || nMsgs != int64(len(msgs)) {
		return &eventstore.Error{Op: "append", Err: fmt.Errorf("outbox/postgres: wrote %d of %d records and %d of %d messages", nEvents, len(records), nMsgs, len(msgs))}
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

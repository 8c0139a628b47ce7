package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/esflow/esflow/pkg/eventstore"
	pgstore "github.com/esflow/esflow/pkg/eventstore/postgres"
	"github.com/esflow/esflow/pkg/outbox"
)

// guardCode is the SQLSTATE the chain guard function raises.
const guardCode = "ES409"

type queries struct {
	appendBoth, appendMsgs string
	// appendValues[r][m] writes r records and m messages with VALUES lists
	// of scalar parameters (see valuesSQL); r in 1..maxValuesRows.
	// appendValuesUnchecked is the same for records none of which needs
	// its predecessor checked (see valuesSQL).
	appendValues, appendValuesUnchecked [maxValuesRows + 1][maxValuesRows + 1]string
	fetch, del, backlog, parked         string
	park                                string
	streamKey                           string // raw constraint name of the events table
}

func buildQueries(s eventstore.Schema, table string) queries {
	ob := eventstore.Quote(table)
	msgInsert := `INSERT INTO ` + ob + ` (topic, key, value, headers, key_hash)
    SELECT m.topic, m.key, m.value, m.headers, m.key_hash
    FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::bytea[], $5::int[]) WITH ORDINALITY AS m(topic, key, value, headers, key_hash, ord)
    ORDER BY m.ord`
	var values, unchecked [maxValuesRows + 1][maxValuesRows + 1]string
	for r := 1; r <= maxValuesRows; r++ {
		for m := 0; m <= maxValuesRows; m++ {
			values[r][m] = valuesSQL(s, table, r, m, true)
			unchecked[r][m] = valuesSQL(s, table, r, m, false)
		}
	}
	shard := `parked_at IS NULL AND ($1::int <= 1 OR key_hash % $1::int = $2::int)`
	return queries{
		// One statement, hence one round trip and one implicit
		// transaction: the events insert (the event store's statement,
		// with the chain check turned into an error) and the outbox
		// insert commit together or not at all. The predecessor check is
		// a scalar subquery, never hashed, for the reason given in the
		// event store's statement (TestAppendPlansUseTheStreamIndex).
		appendBoth: `WITH m AS (
    ` + msgInsert + `
    RETURNING 1
), e AS (
    ` + recordsInsert(s, table, 6) + `
)
SELECT (SELECT count(*) FROM e), (SELECT count(*) FROM m)`,
		appendMsgs:            msgInsert,
		appendValues:          values,
		appendValuesUnchecked: unchecked,
		fetch: `SELECT id, topic, key, value, headers, created_at FROM ` + ob + `
WHERE ` + shard + `
ORDER BY id
LIMIT $3`,
		del:       `DELETE FROM ` + ob + ` WHERE id = ANY($1::bigint[])`,
		backlog:   `SELECT count(*), min(created_at) FROM ` + ob + ` WHERE ` + shard,
		parked:    `SELECT count(*) FROM ` + ob + ` WHERE parked_at IS NOT NULL AND ($1::int <= 1 OR key_hash % $1::int = $2::int)`,
		park:      `UPDATE ` + ob + ` SET parked_at = now(), park_reason = $2 WHERE id = $1`,
		streamKey: s.Table + "_stream_key",
	}
}

// recordsInsert is the records' INSERT of the one-statement appends, its
// five array parameters (stream ids, positions, topics, data, first
// flags) numbered from $first: the event store's statement with the chain
// check turned into an error by the guard function, and RETURNING 1 so
// that the caller counts the rows.
func recordsInsert(s eventstore.Schema, table string, first int) string {
	q := eventstore.Quote
	ev, sid, pos, top, dat := q(s.Table), q(s.StreamIDColumn), q(s.PositionColumn), q(s.TopicColumn), q(s.DataColumn)
	p := func(i int) string { return "$" + strconv.Itoa(first+i) }
	return `INSERT INTO ` + ev + ` (` + sid + `, ` + pos + `, ` + top + `, ` + dat + `)
    SELECT r.sid,
        CASE WHEN NOT r.first OR r.pos = 0 OR (
            SELECT true FROM ` + ev + ` x WHERE x.` + sid + ` = r.sid AND x.` + pos + ` = r.pos - 1)
        THEN r.pos ELSE ` + q(table+"_chain_guard") + `(r.sid, r.pos) END,
        r.topic, r.data
    FROM unnest(` + p(0) + `::uuid[], ` + p(1) + `::bigint[], ` + p(2) + `::text[], ` + p(3) + `::bytea[], ` + p(4) + `::bool[]) WITH ORDINALITY AS r(sid, pos, topic, data, first, ord)
    ORDER BY r.ord
    RETURNING 1`
}

// maxValuesRows is the largest batch (records, and messages) written
// with VALUES lists instead of unnest over arrays.
//
// Why: PostgreSQL plans a prepared statement afresh on every execution
// while it judges a custom plan cheaper than the generic one. For
// unnest($1::uuid[]) the custom plan knows the array length and the
// generic plan assumes 100 rows, so the unnest statement is re-planned on
// every call: the server log showed ~200 µs of the ~300 µs a one-event
// append costs in Bind (planning), against ~10 µs for the same rows as
// VALUES. A VALUES statement's generic plan estimates exactly its rows,
// so after five executions the generic plan is used and Bind costs
// nothing. Larger batches keep unnest: one statement text for every size,
// and the planning is shared by many rows.
const maxValuesRows = 8

// valuesSQL is the VALUES form of appendBoth for r records and m
// messages: the message insert (if any) in a CTE, the records insert as
// the main statement, so its command tag counts the records. Parameters:
// five per message (topic, key, value, headers, key_hash), then five per
// record (stream, position, topic, data, nocheck). nocheck is true for a
// record whose predecessor needs no check (not its stream's first in the
// batch, or at position 0). Rows are inserted in batch order (ORDER BY
// ord), so seq follows the batch order, as NOTIFICATIONS.md needs. A
// single row has no order to keep, and its statement has no ORDER BY
// (a Sort node sets up a tuplesort on every execution).
//
// Without check (all records have nocheck true: every new aggregate's
// save, and any save whose streams start at position 0) the statement
// has neither the nocheck parameter nor the CASE with its EXISTS
// subquery, which the executor would otherwise set up on every
// execution: four parameters per record.
func valuesSQL(s eventstore.Schema, table string, r, m int, check bool) string {
	q := eventstore.Quote
	ev, sid, pos, top, dat := q(s.Table), q(s.StreamIDColumn), q(s.PositionColumn), q(s.TopicColumn), q(s.DataColumn)
	var b strings.Builder
	p := 0
	param := func(typ string) {
		p++
		b.WriteString("$")
		b.WriteString(strconv.Itoa(p))
		b.WriteString("::")
		b.WriteString(typ)
	}
	rows := func(n int, types []string) {
		for i := range n {
			if i > 0 {
				b.WriteString(",\n        ")
			}
			b.WriteString("(")
			b.WriteString(strconv.Itoa(i + 1))
			for _, t := range types {
				b.WriteString(", ")
				param(t)
			}
			b.WriteString(")")
		}
	}
	if m > 0 {
		b.WriteString("WITH m AS (\n    INSERT INTO " + q(table) + " (topic, key, value, headers, key_hash)\n    SELECT v.topic, v.key, v.value, v.headers, v.key_hash\n    FROM (VALUES ")
		rows(m, []string{"text", "bytea", "bytea", "bytea", "int"})
		b.WriteString(") AS v(ord, topic, key, value, headers, key_hash)")
		if m > 1 {
			b.WriteString("\n    ORDER BY v.ord")
		}
		b.WriteString("\n)\n")
	}
	b.WriteString("INSERT INTO " + ev + " (" + sid + ", " + pos + ", " + top + ", " + dat + ")\n")
	if !check {
		b.WriteString("SELECT r.sid, r.pos, r.topic, r.data\nFROM (VALUES ")
		rows(r, []string{"uuid", "bigint", "text", "bytea"})
		b.WriteString(") AS r(ord, sid, pos, topic, data)")
		if r > 1 {
			b.WriteString("\nORDER BY r.ord")
		}
		return b.String()
	}
	b.WriteString("SELECT r.sid,\n    CASE WHEN r.nocheck OR (\n        SELECT true FROM " + ev + " x WHERE x." + sid + " = r.sid AND x." + pos + " = r.pos - 1)\n")
	b.WriteString("    THEN r.pos ELSE " + q(table+"_chain_guard") + "(r.sid, r.pos) END,\n    r.topic, r.data\nFROM (VALUES ")
	rows(r, []string{"uuid", "bigint", "text", "bytea", "bool"})
	b.WriteString(") AS r(ord, sid, pos, topic, data, nocheck)")
	if r > 1 {
		b.WriteString("\nORDER BY r.ord")
	}
	return b.String()
}

// valuesArgs are the parameters of valuesSQL for the batch, and whether
// any record needs its predecessor checked (the statement with check).
func valuesArgs(records []eventstore.Record, msgs []outbox.Message) ([]any, bool, error) {
	args := make([]any, 0, 5*(len(msgs)+len(records)))
	for i, m := range msgs {
		if m.Topic == "" {
			return nil, false, fmt.Errorf("outbox/postgres: append: %w: message %d has no topic", outbox.ErrUnroutable, i)
		}
		h, err := outbox.EncodeHeaders(m.Headers)
		if err != nil {
			return nil, false, fmt.Errorf("outbox/postgres: append: message %d: %w", i, err)
		}
		args = append(args, m.Topic, m.Key, m.Value, h, outbox.KeyHash(m.Key))
	}
	nocheck := make([]bool, len(records))
	check := false
	for i, r := range records {
		if r.Position > math.MaxInt64 {
			return nil, false, &eventstore.Error{Op: "append", StreamID: r.StreamID, Position: r.Position,
				Err: fmt.Errorf("%w: position exceeds the bigint range", eventstore.ErrInvalidRecord)}
		}
		first := true
		for _, prev := range records[:i] {
			if prev.StreamID == r.StreamID {
				first = false
				break
			}
		}
		nocheck[i] = !first || r.Position == 0
		check = check || !nocheck[i]
	}
	for i, r := range records {
		data := r.Data
		if data == nil {
			data = []byte{}
		}
		args = append(args, pgtype.UUID{Bytes: r.StreamID, Valid: true}, int64(r.Position), r.Topic, data)
		if check {
			args = append(args, nocheck[i])
		}
	}
	return args, check, nil
}

// msgArgs are the column arrays of the messages of one append.
func msgArgs(msgs []outbox.Message) ([]any, error) {
	topics := make([]string, len(msgs))
	keys := make([][]byte, len(msgs))
	vals := make([][]byte, len(msgs))
	hdrs := make([][]byte, len(msgs))
	hashes := make([]int32, len(msgs))
	for i, m := range msgs {
		if m.Topic == "" {
			return nil, fmt.Errorf("%w: message %d has no topic", outbox.ErrUnroutable, i)
		}
		h, err := outbox.EncodeHeaders(m.Headers)
		if err != nil {
			return nil, fmt.Errorf("message %d: %w", i, err)
		}
		topics[i], keys[i], vals[i], hdrs[i], hashes[i] = m.Topic, m.Key, m.Value, h, outbox.KeyHash(m.Key)
	}
	return []any{topics, keys, vals, hdrs, hashes}, nil
}

// recordArgs are the column arrays of the records of one append, with
// first marking each stream's first record in the batch.
func recordArgs(records []eventstore.Record) ([]any, error) {
	ids := make([]pgtype.UUID, len(records))
	pos := make([]int64, len(records))
	topics := make([]string, len(records))
	data := make([][]byte, len(records))
	first := make([]bool, len(records))
	seen := make(map[uuid.UUID]struct{}, 4)
	for i, r := range records {
		if r.Position > math.MaxInt64 {
			return nil, &eventstore.Error{Op: "append", StreamID: r.StreamID, Position: r.Position,
				Err: fmt.Errorf("%w: position exceeds the bigint range", eventstore.ErrInvalidRecord)}
		}
		ids[i] = pgtype.UUID{Bytes: r.StreamID, Valid: true}
		pos[i] = int64(r.Position)
		topics[i] = r.Topic
		data[i] = r.Data
		if data[i] == nil {
			data[i] = []byte{}
		}
		if _, ok := seen[r.StreamID]; !ok {
			seen[r.StreamID] = struct{}{}
			first[i] = true
		}
	}
	return []any{ids, pos, topics, data, first}, nil
}

// AppendWithOutbox implements [eventstore.OutboxRecorder]. Records and
// messages are written by a single statement (one round trip, atomic):
// a conflicting record — a position already taken, or a stream that does
// not reach the first position — fails the whole statement with an error
// matching [eventstore.ErrConcurrency], and no message is written. A
// message without a topic is refused with an error matching
// [outbox.ErrUnroutable]. After the commit, relays are woken (see
// [Outbox.Wake]); nothing is signalled inside the transaction.
func (o *Outbox) AppendWithOutbox(ctx context.Context, records []eventstore.Record, msgs []outbox.Message) error {
	if err := eventstore.ValidateBatch(records); err != nil {
		return err
	}
	if len(records) == 0 && len(msgs) == 0 {
		return nil
	}
	if o.wal && len(msgs) > 0 {
		return o.appendWAL(ctx, records, msgs)
	}
	if len(records) > 0 && len(records) <= maxValuesRows && len(msgs) <= maxValuesRows {
		return o.appendValues(ctx, records, msgs)
	}
	margs, err := msgArgs(msgs)
	if err != nil {
		return fmt.Errorf("outbox/postgres: append: %w", err)
	}
	if len(records) == 0 {
		if _, err := o.pool.Exec(ctx, o.q.appendMsgs, margs...); err != nil {
			return fmt.Errorf("outbox/postgres: append messages: %w", pgstore.TranslateError(err))
		}
		o.committed()
		return nil
	}
	rargs, err := recordArgs(records)
	if err != nil {
		return err
	}
	var nEvents, nMsgs int64
	err = o.pool.QueryRow(ctx, o.q.appendBoth, append(margs, rargs...)...).Scan(&nEvents, &nMsgs)
	if err != nil {
		return o.appendError(records, err)
	}
	if nEvents != int64(len(records)) || nMsgs != int64(len(msgs)) {
		// Cannot happen: the guard raises instead of skipping rows. Say
		// so loudly rather than pretend.
		return &eventstore.Error{Op: "append", Err: fmt.Errorf("outbox/postgres: wrote %d of %d records and %d of %d messages", nEvents, len(records), nMsgs, len(msgs))}
	}
	o.events.Committed() // the records wait for their notification ids
	if len(msgs) > 0 {
		o.committed()
	}
	return nil
}

// appendValues is AppendWithOutbox for a small batch (see maxValuesRows).
func (o *Outbox) appendValues(ctx context.Context, records []eventstore.Record, msgs []outbox.Message) error {
	args, check, err := valuesArgs(records, msgs)
	if err != nil {
		return err
	}
	sql := o.q.appendValuesUnchecked[len(records)][len(msgs)]
	if check {
		sql = o.q.appendValues[len(records)][len(msgs)]
	}
	tag, err := o.pool.Exec(ctx, sql, args...)
	if err != nil {
		return o.appendError(records, err)
	}
	if n := tag.RowsAffected(); n != int64(len(records)) {
		// Cannot happen: every row is inserted or the guard raises.
		return &eventstore.Error{Op: "append", Err: fmt.Errorf("outbox/postgres: wrote %d of %d records", n, len(records))}
	}
	o.events.Committed() // the records wait for their notification ids
	if len(msgs) > 0 {
		o.committed()
	}
	return nil
}

// appendError maps a failed append statement.
func (o *Outbox) appendError(records []eventstore.Record, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "23505" && (pgErr.ConstraintName == "" || pgErr.ConstraintName == o.q.streamKey):
			id, pos := conflictingStream(records, pgErr.Detail)
			return eventstore.ConcurrencyError(id, pos, fmt.Errorf("position already taken: %w", err))
		case pgErr.Code == guardCode:
			id, pos := records[0].StreamID, records[0].Position
			if f := strings.Fields(pgErr.Detail); len(f) == 2 {
				if u, perr := uuid.Parse(f[0]); perr == nil {
					if p, perr := strconv.ParseUint(f[1], 10, 64); perr == nil {
						id, pos = u, p
					}
				}
			}
			return eventstore.ConcurrencyError(id, pos, errors.New("the stream does not reach the expected version"))
		}
	}
	return &eventstore.Error{Op: "append", Err: fmt.Errorf("outbox/postgres: %w", pgstore.TranslateError(err))}
}

// conflictingStream names the stream of a unique violation from its
// detail ("Key (…)=(id, position) already exists."), falling back to the
// batch's first record.
func conflictingStream(records []eventstore.Record, detail string) (uuid.UUID, uint64) {
	seen := map[uuid.UUID]bool{}
	for _, r := range records {
		if seen[r.StreamID] {
			continue
		}
		seen[r.StreamID] = true
		if detail != "" && strings.Contains(detail, r.StreamID.String()) {
			return r.StreamID, r.Position
		}
	}
	return records[0].StreamID, records[0].Position
}

func validShard(shard outbox.Shard) error {
	if !shard.Valid() {
		return fmt.Errorf("outbox/postgres: invalid shard %d/%d", shard.Index, shard.Count)
	}
	return nil
}

func shardArgs(shard outbox.Shard) (int32, int32) {
	if shard.Count <= 1 {
		return 1, 0
	}
	return int32(shard.Count), int32(shard.Index)
}

// Backlog implements [outbox.Source]. Parked messages are not counted
// (see [Outbox.Parked]).
func (o *Outbox) Backlog(ctx context.Context, shard outbox.Shard) (outbox.Backlog, error) {
	if err := validShard(shard); err != nil {
		return outbox.Backlog{}, err
	}
	count, index := shardArgs(shard)
	var b outbox.Backlog
	var oldest *time.Time
	if err := o.pool.QueryRow(ctx, o.q.backlog, count, index).Scan(&b.Messages, &oldest); err != nil {
		return outbox.Backlog{}, fmt.Errorf("outbox/postgres: backlog: %w", pgstore.TranslateError(err))
	}
	if oldest != nil {
		b.Oldest = *oldest
	}
	return b, nil
}

// Parked counts the shard's parked messages.
func (o *Outbox) Parked(ctx context.Context, shard outbox.Shard) (int64, error) {
	if err := validShard(shard); err != nil {
		return 0, err
	}
	count, index := shardArgs(shard)
	var n int64
	if err := o.pool.QueryRow(ctx, o.q.parked, count, index).Scan(&n); err != nil {
		return 0, fmt.Errorf("outbox/postgres: parked: %w", pgstore.TranslateError(err))
	}
	return n, nil
}

// Park implements [outbox.Source]: the message stays in the table with
// parked_at and park_reason set and is never fetched again. An unknown id
// fails with an error matching [eventstore.ErrNotFound].
func (o *Outbox) Park(ctx context.Context, id int64, reason string) error {
	tag, err := o.pool.Exec(ctx, o.q.park, id, reason)
	if err != nil {
		return fmt.Errorf("outbox/postgres: park message %d: %w", id, pgstore.TranslateError(err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("outbox/postgres: park message %d: %w", id, eventstore.ErrNotFound)
	}
	return nil
}

package postgres

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/esflow/esflow/pkg/eventstore"
)

// ReadStream returns the records of one stream selected by q (see
// [eventstore.Recorder]).
func (s *Store) ReadStream(ctx context.Context, streamID uuid.UUID, q eventstore.StreamQuery) ([]eventstore.Record, error) {
	const op = "read stream"
	if err := s.checkOpen(op); err != nil {
		return nil, err
	}
	if q.Limit < 0 {
		return nil, &eventstore.Error{Op: op, StreamID: streamID, Err: fmt.Errorf("%w: negative limit %d", eventstore.ErrInvalidRecord, q.Limit)}
	}
	if q.After != nil && *q.After >= math.MaxInt64 {
		return []eventstore.Record{}, nil // no position can follow
	}
	n := s.names
	var sql strings.Builder
	sql.WriteString(`SELECT ` + n.Position + `, ` + n.Topic + `, ` + n.Data + ` FROM ` + n.Table + ` WHERE ` + n.StreamID + ` = $1`)
	args := []any{pgtype.UUID{Bytes: streamID, Valid: true}}
	param := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if q.After != nil {
		sql.WriteString(` AND ` + n.Position + ` > ` + param(int64(*q.After)))
	}
	if q.UpTo != nil && *q.UpTo < math.MaxInt64 {
		sql.WriteString(` AND ` + n.Position + ` <= ` + param(int64(*q.UpTo)))
	}
	sql.WriteString(` ORDER BY ` + n.Position)
	if q.Descending {
		sql.WriteString(` DESC`)
	}
	if q.Limit > 0 {
		sql.WriteString(` LIMIT ` + param(int64(q.Limit)))
	}
	rows, err := s.pool.Query(ctx, sql.String(), args...)
	if err != nil {
		return nil, &eventstore.Error{Op: op, StreamID: streamID, Err: TranslateError(err)}
	}
	out, err := scanStream(rows, streamID)
	if err != nil {
		return nil, &eventstore.Error{Op: op, StreamID: streamID, Err: TranslateError(err)}
	}
	return out, nil
}

// scanStream collects the (position, topic, data) rows of one stream.
//
// Loading a big aggregate reads thousands of rows, so rows in the binary
// format pgx asks for are taken from their raw bytes: the data of many
// rows is copied into one shared buffer (each record's Data capped at its
// own length) and a topic equal to the previous row's is not allocated
// again. Any other format goes through Scan.
func scanStream(rows pgx.Rows, streamID uuid.UUID) ([]eventstore.Record, error) {
	defer rows.Close()
	out := make([]eventstore.Record, 0, 16)
	var (
		pos   int64
		topic string
		data  []byte
		arena []byte
	)
	for rows.Next() {
		raw := rows.RawValues()
		if !binaryStreamRow(rows.FieldDescriptions(), raw) {
			if err := rows.Scan(&pos, &topic, &data); err != nil {
				return nil, err
			}
			out = append(out, eventstore.Record{StreamID: streamID, Position: uint64(pos), Topic: topic, Data: data})
			data = nil // Scan would otherwise reuse the buffer
			continue
		}
		pos = int64(binary.BigEndian.Uint64(raw[0]))
		if topic != string(raw[1]) {
			topic = string(raw[1])
		}
		if cap(arena)-len(arena) < len(raw[2]) {
			// Chunks double up to 64 KiB: a short stream does not pay
			// for a big buffer, a long one allocates rarely.
			arena = make([]byte, 0, max(min(2*cap(arena), 64<<10), 2*len(raw[2])))
		}
		from := len(arena)
		arena = append(arena, raw[2]...)
		out = append(out, eventstore.Record{StreamID: streamID, Position: uint64(pos), Topic: topic, Data: arena[from:len(arena):len(arena)]})
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// binaryStreamRow reports whether a (position, topic, data) row is in the
// form scanStream reads from raw bytes: a binary bigint, non-NULL text
// and a binary, non-NULL bytea.
func binaryStreamRow(fds []pgconn.FieldDescription, raw [][]byte) bool {
	return len(fds) == 3 && len(raw) == 3 &&
		fds[0].Format == pgx.BinaryFormatCode && fds[0].DataTypeOID == pgtype.Int8OID && len(raw[0]) == 8 &&
		(fds[1].DataTypeOID == pgtype.TextOID || fds[1].DataTypeOID == pgtype.VarcharOID) && raw[1] != nil &&
		fds[2].Format == pgx.BinaryFormatCode && fds[2].DataTypeOID == pgtype.ByteaOID && raw[2] != nil
}

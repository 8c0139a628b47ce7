package postgres

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/esflow/esflow/pkg/eventstore"
	pgstore "github.com/esflow/esflow/pkg/eventstore/postgres"
	"github.com/esflow/esflow/pkg/outbox"
)

// fetchQueries are the relay-side statements that are not in queries.
//
// Ids travel as runs of consecutive integers, two arrays of run starts
// and ends: a relay's batch is nearly always one run (its rows are the
// lowest ids of the table), and sending 1000 ids as a bigint[] cost more
// client CPU (pgx encodes slices by reflection) than any statement here.
// Since ids are unique integers, a run [lo, hi] whose every id was in the
// list covers exactly those rows.
type fetchQueries struct {
	// fetchExcept is fetch skipping the runs in $4/$5. NOT IN over a
	// subquery is planned as a hashed SubPlan: one hash probe per row
	// scanned, whatever the number of runs.
	fetchExcept string
	// fetchOutside is fetchExcept for one run [$4, $5], the usual case:
	// the rows below it and the rows above it, each an index range scan
	// in id order, merged. It does not visit the run's rows at all, where
	// NOT IN reads and filters each of them (about 1 ms per 1000 rows in
	// EXPLAIN ANALYZE).
	fetchOutside string
	// delRuns deletes the rows of the runs in $1/$2: one index range scan
	// per run.
	delRuns string
}

func buildFetchQueries(table string) fetchQueries {
	ob := eventstore.Quote(table)
	cols := `SELECT id, topic, key, value, headers, created_at FROM ` + ob + `
    WHERE parked_at IS NULL AND ($1::int <= 1 OR key_hash % $1::int = $2::int)`
	return fetchQueries{
		fetchOutside: `(` + cols + ` AND id < $4 ORDER BY id LIMIT $3)
UNION ALL
(` + cols + ` AND id > $5 ORDER BY id LIMIT $3)
ORDER BY id
LIMIT $3`,
		fetchExcept: `SELECT id, topic, key, value, headers, created_at FROM ` + ob + `
WHERE parked_at IS NULL AND ($1::int <= 1 OR key_hash % $1::int = $2::int)
    AND id NOT IN (SELECT generate_series(r.lo, r.hi) FROM unnest($4::bigint[], $5::bigint[]) AS r(lo, hi))
ORDER BY id
LIMIT $3`,
		delRuns: `DELETE FROM ` + ob + ` AS o USING unnest($1::bigint[], $2::bigint[]) AS r(lo, hi)
WHERE o.id BETWEEN r.lo AND r.hi`,
	}
}

// runs returns ids as runs of consecutive values: starts and ends. ids
// need not be sorted; a run is extended only by the next id in ids.
func runs(ids []int64) (lo, hi pgtype.FlatArray[int64]) {
	for i, id := range ids {
		if i > 0 && id == hi[len(hi)-1]+1 {
			hi[len(hi)-1] = id
			continue
		}
		lo, hi = append(lo, id), append(hi, id)
	}
	return lo, hi
}

// Fetch implements [outbox.Source]: up to limit unparked messages of the
// shard in id order.
func (o *Outbox) Fetch(ctx context.Context, shard outbox.Shard, limit int) ([]outbox.Message, error) {
	return o.FetchExcept(ctx, shard, limit, nil)
}

// FetchExcept is [Outbox.Fetch] skipping the messages whose ids are in
// except: up to limit unparked messages of the shard that are not in
// except, lowest id first. The relay fetches its next batch with it while
// the current one, still in the table, is being published
// (relay.ExceptFetcher).
func (o *Outbox) FetchExcept(ctx context.Context, shard outbox.Shard, limit int, except []int64) ([]outbox.Message, error) {
	if err := validShard(shard); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, fmt.Errorf("outbox/postgres: fetch: limit %d must be positive", limit)
	}
	count, index := shardArgs(shard)
	// One round trip, one implicit transaction: the planner settings,
	// local to it, then the fetch.
	b := &pgx.Batch{}
	b.Queue(planFetch)
	if len(except) == 0 {
		b.Queue(o.q.fetch, count, index, limit)
	} else if lo, hi := runs(except); len(lo) == 1 {
		b.Queue(o.fq.fetchOutside, count, index, limit, lo[0], hi[0])
	} else {
		b.Queue(o.fq.fetchExcept, count, index, limit, lo, hi)
	}
	br := o.pool.SendBatch(ctx, b)
	out, err := fetchResults(br, limit)
	if cerr := br.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("outbox/postgres: fetch: %w", pgstore.TranslateError(err))
	}
	return out, nil
}

// planFetch makes the fetch that follows it walk the primary key in id
// order, whatever the statistics say. Right after a backlog was written
// (the table just grew, autovacuum has not analysed it yet), PostgreSQL
// estimated a few hundred unparked rows (IS NULL without statistics) and
// chose a parallel sequential scan plus a top-N sort of the whole table:
// 100-400 ms per 1000-row fetch of a 100k-row backlog, against about
// 1 ms for the index scan (EXPLAIN ANALYZE). Without sorting the plan
// has to follow the index; without parallel workers it does not pay for
// starting them (a Gather Merge over the index took 20 ms). The same
// estimates put a sharded fetch's cost above jit_above_cost, and JIT
// compiling it took 10-300 ms for a 1 ms query: no JIT either. is_local:
// the settings end with the batch's implicit transaction.
const planFetch = `SELECT set_config('enable_sort', 'off', true),
    set_config('max_parallel_workers_per_gather', '0', true),
    set_config('jit', 'off', true)`

func fetchResults(br pgx.BatchResults, limit int) ([]outbox.Message, error) {
	if _, err := br.Exec(); err != nil {
		return nil, err
	}
	rows, err := br.Query()
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return scanMessages(rows, limit)
}

// Delete implements [outbox.Source]. Unknown ids are ignored.
func (o *Outbox) Delete(ctx context.Context, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	lo, hi := runs(ids)
	b := &pgx.Batch{}
	b.Queue(asyncCommit)
	b.Queue(o.fq.delRuns, lo, hi)
	if err := o.pool.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("outbox/postgres: delete: %w", pgstore.TranslateError(err))
	}
	return nil
}

// asyncCommit lets a delete's commit return before its WAL is flushed.
// A delete lost in a server crash only brings published messages back,
// to be published again: a duplicate, which at-least-once delivery
// allows, never a loss. The relay then does not wait for a disk flush per
// batch, nor make the WAL writer flush for it. is_local, as planFetch.
const asyncCommit = `SELECT set_config('synchronous_commit', 'off', true)`

// PostgreSQL type oids and the binary format code of the fetched columns.
const (
	oidInt8        = 20
	oidText        = 25
	oidBytea       = 17
	oidTimestamptz = 1184
	binaryFormat   = 1
)

// scanMessages reads the rows of fetch (id, topic, key, value, headers,
// created_at). With the columns in binary format (pgx's choice for these
// types) it copies the raw column bytes into a few large blocks instead of
// allocating every key, value and header slice, and decodes the headers
// straight from the row buffer: pgx's Scan and its per-value allocations
// were most of a fetch's client CPU. Otherwise it falls back to Scan.
func scanMessages(rows pgx.Rows, limit int) ([]outbox.Message, error) {
	out := make([]outbox.Message, 0, min(limit, 1024))
	if !rawColumns(rows.FieldDescriptions()) {
		var hdr []byte
		for rows.Next() {
			var m outbox.Message
			if err := rows.Scan(&m.ID, &m.Topic, &m.Key, &m.Value, &hdr, &m.CreatedAt); err != nil {
				return nil, err
			}
			var err error
			if m.Headers, err = decodeHeaders(hdr, nil); err != nil {
				return nil, fmt.Errorf("message %d: %w", m.ID, err)
			}
			out = append(out, m)
		}
		return out, rows.Err()
	}
	var a arena
	var topic string
	for rows.Next() {
		v := rows.RawValues()
		if len(v) != 6 || len(v[0]) != 8 || len(v[5]) != 8 || v[1] == nil {
			return nil, errors.New("unexpected row layout")
		}
		m := outbox.Message{ID: int64(binary.BigEndian.Uint64(v[0]))}
		if string(v[1]) != topic {
			topic = string(v[1])
		}
		m.Topic = topic
		m.Key = a.copy(v[2])
		m.Value = a.copy(v[3])
		var err error
		if m.Headers, err = decodeHeaders(v[4], &a); err != nil {
			return nil, fmt.Errorf("message %d: %w", m.ID, err)
		}
		us := int64(binary.BigEndian.Uint64(v[5])) // since 2000-01-01 UTC
		if us == math.MaxInt64 || us == math.MinInt64 {
			return nil, fmt.Errorf("message %d: created_at is infinite", m.ID)
		}
		const y2k = 946_684_800 // Unix seconds
		m.CreatedAt = time.Unix(y2k+us/1_000_000, us%1_000_000*1_000)
		out = append(out, m)
	}
	return out, rows.Err()
}

// rawColumns reports whether fds are fetch's columns in the formats
// scanMessages reads raw. Text is the same in either format.
func rawColumns(fds []pgconn.FieldDescription) bool {
	want := [...]uint32{oidInt8, oidText, oidBytea, oidBytea, oidBytea, oidTimestamptz}
	if len(fds) != len(want) {
		return false
	}
	for i, fd := range fds {
		if fd.DataTypeOID != want[i] || (want[i] != oidText && fd.Format != binaryFormat) {
			return false
		}
	}
	return true
}

// arena hands out byte slices carved from large blocks, so a fetched
// batch's keys, values and header values cost a few allocations instead
// of several per message. Slices never overlap and are capped, so
// appending to one cannot overwrite another.
type arena struct {
	block []byte
	hdrs  []outbox.Header
}

// Block sizes of a batch's arena.
const (
	arenaBlock   = 256 << 10
	headersBlock = 1024
)

// alloc returns n bytes (non-nil, even for n = 0).
func (a *arena) alloc(n int) []byte {
	if a.block == nil || n > cap(a.block)-len(a.block) {
		if n > arenaBlock/4 {
			return make([]byte, n)
		}
		a.block = make([]byte, 0, arenaBlock)
	}
	s := a.block[len(a.block) : len(a.block)+n : len(a.block)+n]
	a.block = a.block[:len(a.block)+n]
	return s
}

// copy returns a copy of b; nil (SQL NULL) stays nil.
func (a *arena) copy(b []byte) []byte {
	if b == nil {
		return nil
	}
	s := a.alloc(len(b))
	copy(s, b)
	return s
}

// headers returns room for n headers.
func (a *arena) headers(n int) []outbox.Header {
	if n > cap(a.hdrs)-len(a.hdrs) {
		a.hdrs = make([]outbox.Header, 0, max(n, headersBlock))
	}
	s := a.hdrs[len(a.hdrs) : len(a.hdrs) : len(a.hdrs)+n]
	a.hdrs = a.hdrs[:len(a.hdrs)+n]
	return s
}

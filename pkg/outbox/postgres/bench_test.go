package postgres_test

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/esflow/esflow/internal/pgtest"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/outbox"
)

// The save-path benchmark (issue 7, workload 1): the full save path
// (aggregate -> events + outbox rows in one transaction, through
// application.Save with Config.Outbox set) against a plain pgx loop that
// inserts the same rows in the fastest way, at the same concurrency and
// transaction size. One op is one transaction; events/s is reported.
//
// The figures mean something only with default durability (fsync and
// synchronous_commit on). internal/pgtest's own cluster runs with fsync
// off, so point ESFLOW_TEST_DATABASE_URL at a server with default settings
// (see /work/notes/savepath.md for the commands); the benchmark logs what
// the server it got has.

// benchOpened and benchDeposited are ~250-byte JSON events.
type benchOpened struct {
	Owner     string `json:"owner"`
	Currency  string `json:"currency"`
	Branch    string `json:"branch"`
	Reference string `json:"reference"`
	Note      string `json:"note"`
}

type benchDeposited struct {
	Amount    int64  `json:"amount"`
	Currency  string `json:"currency"`
	Reference string `json:"reference"`
	Channel   string `json:"channel"`
	Note      string `json:"note"`
}

type benchAccount struct {
	aggregate.Root
	Balance int64 `json:"balance"`
}

func (a *benchAccount) Apply(e aggregate.Event) {
	if d, ok := e.Payload.(*benchDeposited); ok {
		a.Balance += d.Amount
	}
}

const benchNote = "lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua ut enim ad minim veniam"

// newBenchAccount returns a new account with n pending events.
func newBenchAccount(b *testing.B, n int) *benchAccount {
	a := new(benchAccount)
	err := aggregate.Create(a, &benchOpened{Owner: "Ada Lovelace", Currency: "EUR", Branch: "Analytical Engine Ltd", Reference: uuid.NewString()[:18], Note: benchNote})
	for i := 1; i < n && err == nil; i++ {
		err = aggregate.Trigger(a, &benchDeposited{Amount: int64(i), Currency: "EUR", Reference: uuid.NewString()[:18], Channel: "sepa-credit-transfer", Note: benchNote})
	}
	if err != nil {
		b.Fatal(err)
	}
	return a
}

func benchRegistry() *aggregate.Registry {
	reg := aggregate.NewRegistry()
	aggregate.Register[benchOpened](reg)
	aggregate.Register[benchDeposited](reg)
	return reg
}

// withPoolSize sets pgxpool's pool_max_conns in a postgres:// DSN.
func withPoolSize(b *testing.B, dsn string, n int) string {
	u, err := url.Parse(dsn)
	if err != nil {
		b.Fatal(err)
	}
	q := u.Query()
	q.Set("pool_max_conns", strconv.Itoa(n))
	u.RawQuery = q.Encode()
	return u.String()
}

// runConcurrently runs op(0) … op(n-1) from conc goroutines and times
// them (the timer is reset first: a warm-up call's time is dropped).
func runConcurrently(b *testing.B, conc, n int, op func(i int) error) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	b.ResetTimer()
	b.StartTimer()
	for g := 0; g < conc; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				if err := op(int(i)); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	if err, _ := firstErr.Load().(error); err != nil {
		b.Fatal(err)
	}
}

// sampleRows are the stored forms of one event of each kind, as the save
// path writes them: the raw baseline inserts rows of the same sizes.
type sampleRows struct {
	opened, deposited       []byte // events.data
	openedMsg, depositedMsg outbox.Message
	openedHdr, depositedHdr []byte
}

func makeSampleRows(b *testing.B, reg *aggregate.Registry) sampleRows {
	store := eventstore.MustNew(nil, reg, eventstore.Options{})
	a := newBenchAccount(b, 2)
	events := a.PendingEvents()
	recs, err := store.Encode(events...)
	if err != nil {
		b.Fatal(err)
	}
	builder := &outbox.Builder{Registry: reg}
	msgs, err := builder.Messages(events, [][]byte{recs[0].Data, recs[1].Data}, false)
	if err != nil {
		b.Fatal(err)
	}
	h0, _ := outbox.EncodeHeaders(msgs[0].Headers)
	h1, _ := outbox.EncodeHeaders(msgs[1].Headers)
	return sampleRows{opened: recs[0].Data, deposited: recs[1].Data, openedMsg: msgs[0], depositedMsg: msgs[1], openedHdr: h0, depositedHdr: h1}
}

var benchSettings = []struct{ conc, events int }{
	{1, 1}, {8, 1}, {32, 1}, {1, 100}, {8, 100},
}

// BenchmarkSave: impl=app is application.Save of new aggregates with
// `events` pending events each (built before the timer starts); impl=raw
// inserts the same rows with one pgx statement per transaction: an
// INSERT … VALUES with a data-modifying CTE for one event, INSERT … SELECT
// FROM unnest(arrays) for 100. Both use a pool of conc connections.
func BenchmarkSave(b *testing.B) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(b)
	reg := benchRegistry()
	logServer(b, dsn)
	rows := makeSampleRows(b, reg)
	b.Logf("row sizes: event data %d/%d bytes, outbox value %d/%d, headers %d/%d",
		len(rows.opened), len(rows.deposited), len(rows.openedMsg.Value), len(rows.depositedMsg.Value), len(rows.openedHdr), len(rows.depositedHdr))

	for _, s := range benchSettings {
		name := fmt.Sprintf("conc=%d/events=%d", s.conc, s.events)
		pdsn := withPoolSize(b, dsn, s.conc)
		b.Run(name+"/impl=app", func(b *testing.B) {
			app, err := application.New(ctx, application.Config{DatabaseURL: pdsn, Registry: reg, Outbox: &outbox.Builder{}, CreateTables: true})
			if err != nil {
				b.Fatal(err)
			}
			defer app.Close()
			truncate(b, dsn)
			warm := make([]*benchAccount, 2*s.conc)
			for i := range warm {
				warm[i] = newBenchAccount(b, s.events)
			}
			aggs := make([]*benchAccount, b.N)
			for i := range aggs {
				aggs[i] = newBenchAccount(b, s.events)
			}
			runConcurrently(b, s.conc, len(warm), func(i int) error { return app.Save(ctx, warm[i]) })
			runConcurrently(b, s.conc, len(aggs), func(i int) error { return app.Save(ctx, aggs[i]) })
			b.ReportMetric(float64(b.N*s.events)/b.Elapsed().Seconds(), "events/s")
		})
		b.Run(name+"/impl=raw", func(b *testing.B) {
			pool, err := pgxpool.New(ctx, pdsn)
			if err != nil {
				b.Fatal(err)
			}
			defer pool.Close()
			// Tables as the application creates them.
			app, err := application.New(ctx, application.Config{DatabaseURL: pdsn, Registry: reg, Outbox: &outbox.Builder{}, CreateTables: true})
			if err != nil {
				b.Fatal(err)
			}
			app.Close()
			truncate(b, dsn)
			op := rawOp(pool, rows, s.events)
			runConcurrently(b, s.conc, 2*s.conc, op)
			runConcurrently(b, s.conc, b.N, op)
			b.ReportMetric(float64(b.N*s.events)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

const rawOne = `WITH e AS (
    INSERT INTO events (sequence_id, position, topic, data) VALUES ($1, 0, $2, $3) RETURNING 1
)
INSERT INTO esflow_outbox (topic, key, value, headers, key_hash) SELECT $4, $5, $6, $7, $8 FROM e`

const rawMany = `WITH e AS (
    INSERT INTO events (sequence_id, position, topic, data)
    SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::bytea[])
)
INSERT INTO esflow_outbox (topic, key, value, headers, key_hash)
SELECT * FROM unnest($5::text[], $6::bytea[], $7::bytea[], $8::bytea[], $9::int[])`

// rawOp returns the raw baseline's transaction: one statement (one round
// trip, one implicit transaction) writing n events and n outbox rows of
// the sample rows' sizes for a new stream.
func rawOp(pool *pgxpool.Pool, rows sampleRows, n int) func(int) error {
	ctx := context.Background()
	if n == 1 {
		return func(int) error {
			id := uuid.New()
			key := []byte(id.String())
			_, err := pool.Exec(ctx, rawOne, pgtype.UUID{Bytes: id, Valid: true}, "benchOpened", rows.opened,
				rows.openedMsg.Topic, key, rows.openedMsg.Value, rows.openedHdr, outbox.KeyHash(key))
			return err
		}
	}
	return func(int) error {
		id := uuid.New()
		key := []byte(id.String())
		hash := outbox.KeyHash(key)
		ids := make([]pgtype.UUID, n)
		pos := make([]int64, n)
		topics := make([]string, n)
		data := make([][]byte, n)
		mTopics := make([]string, n)
		keys := make([][]byte, n)
		vals := make([][]byte, n)
		hdrs := make([][]byte, n)
		hashes := make([]int32, n)
		for i := range n {
			ids[i], pos[i], keys[i], hashes[i] = pgtype.UUID{Bytes: id, Valid: true}, int64(i), key, hash
			if i == 0 {
				topics[i], data[i], mTopics[i], vals[i], hdrs[i] = "benchOpened", rows.opened, rows.openedMsg.Topic, rows.openedMsg.Value, rows.openedHdr
			} else {
				topics[i], data[i], mTopics[i], vals[i], hdrs[i] = "benchDeposited", rows.deposited, rows.depositedMsg.Topic, rows.depositedMsg.Value, rows.depositedHdr
			}
		}
		_, err := pool.Exec(ctx, rawMany, ids, pos, topics, data, mTopics, keys, vals, hdrs, hashes)
		return err
	}
}

func truncate(b *testing.B, dsn string) {
	b.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `TRUNCATE events, esflow_outbox`); err != nil {
		b.Fatal(err)
	}
	// A checkpoint now rather than in the middle of the timed run.
	if _, err := conn.Exec(ctx, `CHECKPOINT`); err != nil {
		b.Logf("checkpoint: %v", err)
	}
}

// logServer logs the durability settings of the server under test.
func logServer(b *testing.B, dsn string) {
	b.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	var settings []string
	for _, name := range []string{"server_version", "fsync", "synchronous_commit", "full_page_writes", "wal_sync_method", "shared_buffers"} {
		var v string
		if err := conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v); err != nil {
			b.Fatal(err)
		}
		settings = append(settings, name+"="+v)
	}
	b.Logf("server: %s", strings.Join(settings, " "))
}

// BenchmarkSaveEncode measures the client-side CPU of one save before any
// SQL: events to records (mapper), to outbox messages (builder) and the
// stored header encoding, for one event of a new aggregate.
func BenchmarkSaveEncode(b *testing.B) {
	reg := benchRegistry()
	store := eventstore.MustNew(nil, reg, eventstore.Options{})
	builder := &outbox.Builder{Registry: reg}
	events := newBenchAccount(b, 1).PendingEvents()
	b.ReportAllocs()
	for b.Loop() {
		recs, err := store.Encode(events...)
		if err != nil {
			b.Fatal(err)
		}
		msgs, err := builder.Messages(events, [][]byte{recs[0].Data}, false)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := outbox.EncodeHeaders(msgs[0].Headers); err != nil {
			b.Fatal(err)
		}
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/esflow/esflow/internal/proccpu"
	"github.com/esflow/esflow/pkg/application"
)

// sampleRows are one event's stored row and outbox row as the application
// writes them; the raw writer inserts copies of them, so both sides write
// the same bytes.
type sampleRows struct {
	topic   string // events.topic
	data    []byte // events.data
	msgTopc string
	key     []byte
	value   []byte
	headers []byte
	keyHash int32
}

// sampleRow saves one account and reads its rows back, then empties the
// tables.
func sampleRow(ctx context.Context, app *application.Application, pool *pgxpool.Pool) (sampleRows, error) {
	var s sampleRows
	a, err := newAccount()
	if err != nil {
		return s, err
	}
	if err := app.Save(ctx, a); err != nil {
		return s, fmt.Errorf("sample save: %w", err)
	}
	if err := pool.QueryRow(ctx, `SELECT topic, data FROM events LIMIT 1`).Scan(&s.topic, &s.data); err != nil {
		return s, fmt.Errorf("sample event row: %w", err)
	}
	if err := pool.QueryRow(ctx, `SELECT topic, key, value, headers, key_hash FROM esflow_outbox LIMIT 1`).
		Scan(&s.msgTopc, &s.key, &s.value, &s.headers, &s.keyHash); err != nil {
		return s, fmt.Errorf("sample outbox row: %w", err)
	}
	return s, truncate(ctx, pool)
}

func truncate(ctx context.Context, pool *pgxpool.Pool) error {
	if _, err := pool.Exec(ctx, `TRUNCATE events, esflow_outbox, events_snapshots RESTART IDENTITY`); err != nil {
		return fmt.Errorf("truncate: %w", err)
	}
	// Neither ANALYZE nor VACUUM here: either one records the empty
	// table's statistics (reltuples 0), and a prepared statement's
	// generic plan made from them checks the append's predecessor with a
	// sequential scan, a plan the connection keeps until autovacuum next
	// analyzes the table (measured: 37 million rows read by 8,616 scans
	// in one 9-second point). TRUNCATE alone leaves the table as a fresh
	// one is (reltuples -1, no statistics), which PostgreSQL plans with
	// the index.
	return nil
}

// rawInsert is the plain pgx statement: the events rows and the outbox
// rows of one transaction in a single statement (one round trip, one
// implicit transaction), from arrays.
const rawInsert = `WITH e AS (
    INSERT INTO events (sequence_id, position, topic, data)
    SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::bytea[])
    RETURNING 1
), m AS (
    INSERT INTO esflow_outbox (topic, key, value, headers, key_hash)
    SELECT * FROM unnest($5::text[], $6::bytea[], $7::bytea[], $8::bytea[], $9::int[])
    RETURNING 1
)
SELECT (SELECT count(*) FROM e) + (SELECT count(*) FROM m)`

// rawWriter writes perTx events of one stream per statement.
type rawWriter struct {
	s      sampleRows
	stream pgtype.UUID
	next   int64
	ids    []pgtype.UUID
	pos    []int64
	topics []string
	data   [][]byte
	mt     []string
	keys   [][]byte
	vals   [][]byte
	hdrs   [][]byte
	hashes []int32
}

func newRawWriter(s sampleRows, perTx int) *rawWriter {
	w := &rawWriter{s: s, stream: pgtype.UUID{Bytes: uuid.New(), Valid: true}}
	w.ids, w.pos, w.topics, w.data = make([]pgtype.UUID, perTx), make([]int64, perTx), make([]string, perTx), make([][]byte, perTx)
	w.mt, w.keys, w.vals, w.hdrs, w.hashes = make([]string, perTx), make([][]byte, perTx), make([][]byte, perTx), make([][]byte, perTx), make([]int32, perTx)
	key := []byte(uuid.UUID(w.stream.Bytes).String())
	for i := range perTx {
		w.ids[i], w.topics[i], w.data[i] = w.stream, s.topic, s.data
		w.mt[i], w.keys[i], w.vals[i], w.hdrs[i], w.hashes[i] = s.msgTopc, key, s.value, s.headers, s.keyHash
	}
	return w
}

func (w *rawWriter) write(ctx context.Context, pool *pgxpool.Pool) error {
	for i := range w.pos {
		w.pos[i] = w.next
		w.next++
	}
	var n int64
	if err := pool.QueryRow(ctx, rawInsert, w.ids, w.pos, w.topics, w.data, w.mt, w.keys, w.vals, w.hdrs, w.hashes).Scan(&n); err != nil {
		return fmt.Errorf("raw insert: %w", err)
	}
	if n != int64(2*len(w.pos)) {
		return fmt.Errorf("raw insert wrote %d rows, want %d", n, 2*len(w.pos))
	}
	return nil
}

// runResult is one measured run: its events per second, and the CPU time this
// process (the client: the full path or the raw loop, not PostgreSQL)
// spent per event.
type runResult struct {
	rate   float64
	cpuPer time.Duration
}

// measure runs workers until warm+dur has passed and returns the events
// per second and client CPU per event of the dur part. Each call of step
// writes perTx events.
func measure(ctx context.Context, workers, perTx int, warm, dur time.Duration, newStep func() (func(context.Context) error, error)) (runResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var done atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		step, err := newStep()
		if err != nil {
			return runResult{}, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if err := step(ctx); err != nil {
					if ctx.Err() == nil {
						errs <- err
						cancel()
					}
					return
				}
				done.Add(int64(perTx))
			}
		}()
	}
	sleep := func(d time.Duration) {
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
	}
	sleep(warm)
	n0, t0, c0 := done.Load(), time.Now(), proccpu.Self()
	sleep(dur)
	n1, t1, c1 := done.Load(), time.Now(), proccpu.Self()
	cancel()
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return runResult{}, err
	}
	if err := ctx.Err(); err != nil && !errors.Is(err, context.Canceled) {
		return runResult{}, err
	}
	r := runResult{rate: float64(n1-n0) / t1.Sub(t0).Seconds()}
	if n1 > n0 {
		r.cpuPer = (c1 - c0) / time.Duration(n1-n0)
	}
	return r, nil
}

// saveRounds is how often each W1 point alternates raw and full runs
// (single 8-second points varied by ±10 %, enough to move a ratio across
// its 0.9 target).
const saveRounds = 3

// truncateWAL empties a WAL-mode database: the tables, and the slot's
// retained WAL (no relay reads it in W1), so that every run starts with
// the same amount of WAL kept.
func truncateWAL(ctx context.Context, pool *pgxpool.Pool) error {
	if err := truncate(ctx, pool); err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, `SELECT pg_replication_slot_advance('esflow_outbox_slot', pg_current_wal_lsn())`); err != nil {
		return fmt.Errorf("advance slot: %w", err)
	}
	return nil
}

// saveFull measures the full save path of app.
func saveFull(ctx context.Context, e *env, st saveSetting, app *application.Application) (runResult, error) {
	return measure(ctx, st.concurrency, st.perTx, e.scale.saveWarm, e.scale.saveTime, func() (func(context.Context) error, error) {
		var acc *Account
		return func(ctx context.Context) error {
			if acc == nil {
				a, err := newAccount()
				if err != nil {
					return err
				}
				acc = a
				if err := acc.record(st.perTx - 1); err != nil {
					return err
				}
			} else if err := acc.record(st.perTx); err != nil {
				return err
			}
			return app.Save(ctx, acc)
		}, nil
	})
}

// saveRound runs setting st once on the raw side, then once on the full
// path in the table mode, and once in the WAL mode (walApp, nil to skip):
// after them in even rounds, before them in odd ones, so that neither
// mode always runs last. Each run is on its emptied database.
func saveRound(ctx context.Context, e *env, round int, st saveSetting, sample sampleRows, rawPool, appPool *pgxpool.Pool, app *application.Application,
	walPool *pgxpool.Pool, walApp *application.Application) (raw, full, wal runResult, err error) {
	runWAL := func() error {
		if walApp == nil {
			return nil
		}
		if err := truncateWAL(ctx, walPool); err != nil {
			return err
		}
		if wal, err = saveFull(ctx, e, st, walApp); err != nil {
			return fmt.Errorf("WAL mode %d/tx c=%d: %w", st.perTx, st.concurrency, err)
		}
		return nil
	}
	if round%2 == 1 {
		if err := runWAL(); err != nil {
			return raw, full, wal, err
		}
	}
	if raw, full, err = saveRoundTable(ctx, e, st, sample, rawPool, appPool, app); err != nil {
		return raw, full, wal, err
	}
	if round%2 == 0 {
		if err := runWAL(); err != nil {
			return raw, full, wal, err
		}
	}
	return raw, full, wal, nil
}

func saveRoundTable(ctx context.Context, e *env, st saveSetting, sample sampleRows, rawPool, appPool *pgxpool.Pool, app *application.Application) (raw, full runResult, err error) {
	if err := truncate(ctx, rawPool); err != nil {
		return raw, full, err
	}
	raw, err = measure(ctx, st.concurrency, st.perTx, e.scale.saveWarm, e.scale.saveTime, func() (func(context.Context) error, error) {
		w := newRawWriter(sample, st.perTx)
		return func(ctx context.Context) error { return w.write(ctx, rawPool) }, nil
	})
	if err != nil {
		return raw, full, fmt.Errorf("raw %d/tx c=%d: %w", st.perTx, st.concurrency, err)
	}
	if err := truncate(ctx, appPool); err != nil {
		return raw, full, err
	}
	full, err = saveFull(ctx, e, st, app)
	if err != nil {
		return raw, full, fmt.Errorf("full path %d/tx c=%d: %w", st.perTx, st.concurrency, err)
	}
	return raw, full, nil
}

func runSave(ctx context.Context, e *env) (*section, error) {
	maxC := 0
	for _, s := range e.scale.saveSettings {
		maxC = max(maxC, s.concurrency)
	}
	appDB, err := e.pg.newDatabase(ctx, e.name("w1_app"), maxC)
	if err != nil {
		return nil, err
	}
	defer appDB.Drop(ctx)
	rawDB, err := e.pg.newDatabase(ctx, e.name("w1_raw"), maxC)
	if err != nil {
		return nil, err
	}
	defer rawDB.Drop(ctx)

	topic := "esbench.w1"
	app, err := openApp(ctx, appDB.dsn, topic, e.log)
	if err != nil {
		return nil, err
	}
	defer app.Close()
	appPool, err := appDB.pool(ctx)
	if err != nil {
		return nil, err
	}
	defer appPool.Close()
	// The raw side gets the same tables, created by the same migrations.
	rawApp, err := openApp(ctx, rawDB.dsn, topic, e.log)
	if err != nil {
		return nil, err
	}
	_ = rawApp.Close()
	rawPool, err := rawDB.pool(ctx)
	if err != nil {
		return nil, err
	}
	defer rawPool.Close()

	sample, err := sampleRow(ctx, app, appPool)
	if err != nil {
		return nil, err
	}

	// The WAL mode, on a database of its own, when the server decodes
	// logical messages.
	var walApp *application.Application
	var walPool *pgxpool.Pool
	if ok, err := logicalWAL(ctx, appPool); err != nil {
		return nil, err
	} else if ok {
		walDB, err := e.pg.newDatabase(ctx, e.name("w1_wal"), maxC)
		if err != nil {
			return nil, err
		}
		defer walDB.Drop(ctx)
		if walApp, err = openAppMode(ctx, walDB.dsn, topic, e.log, application.OutboxWAL); err != nil {
			return nil, err
		}
		defer walApp.Close()
		if walPool, err = walDB.pool(ctx); err != nil {
			return nil, err
		}
		defer walPool.Close()
	}

	sec := &section{setup: []string{
		fmt.Sprintf("Full path: `application.Application` on PostgreSQL with `Outbox: &outbox.Builder{}`; each transaction appends the next events of one account held by the worker (`aggregate.Trigger`, then `app.Save`), %d-byte payload, stored event row %d B of data, outbox value %d B.", payloadSize, len(sample.data), len(sample.value)),
		"Raw limit: plain pgx, one statement per transaction inserting the same event rows and outbox rows (the bytes the application wrote) from arrays with `unnest` (`WITH e AS (INSERT …), m AS (INSERT …)`), the fastest single-transaction form measured here (shared/MEASURED.md).",
		"Client CPU: the CPU time of this process (the full path's Go code or the raw pgx loop; PostgreSQL is another process) per event counted, median of the rounds. On 2 cores shared with PostgreSQL, a point that saturates the machine runs at about 2 s / (client + server CPU per event).",
		fmt.Sprintf("Each point: %d rounds of raw then full, each run %s of warm-up then %s counted, on separate, identically migrated databases emptied (TRUNCATE) before each run; a pool of max(concurrency, 4) connections. The table gives the median of each side's rounds and their range; the ratio is of the medians.", saveRounds, e.scale.saveWarm, e.scale.saveTime),
	}}
	if walApp != nil {
		sec.setup = append(sec.setup, "WAL mode: the same full path with `OutboxMode: wal` on a third database, run after raw and full in rounds 1 and 3 and before them in round 2: each message is a transactional `pg_logical_emit_message` in the statement that inserts the events, instead of an outbox row; the slot's WAL is discarded before each run (`pg_replication_slot_advance`), no relay reads it. Its ratio is to the same raw loop, which writes outbox rows.")
	}
	t := table{header: []string{"events/tx", "concurrency", "full path events/s", "raw pgx events/s", "ratio", "target", "client CPU µs/event, full / raw", "WAL mode events/s", "WAL / raw", "WAL target"}}
	type point struct {
		c        int
		app, raw float64
		perTx    int
	}
	var points []point
	for _, st := range e.scale.saveSettings {
		var raws, fulls, wals, rawCPU, fullCPU []float64
		for round := range saveRounds {
			raw, full, wal, err := saveRound(ctx, e, round, st, sample, rawPool, appPool, app, walPool, walApp)
			if err != nil {
				return nil, err
			}
			raws, fulls = append(raws, raw.rate), append(fulls, full.rate)
			if walApp != nil {
				wals = append(wals, wal.rate)
			}
			rawCPU = append(rawCPU, float64(raw.cpuPer)/float64(time.Microsecond))
			fullCPU = append(fullCPU, float64(full.cpuPer)/float64(time.Microsecond))
		}
		raw, full := median(raws), median(fulls)
		ratio := full / raw
		walCol, walRatio, walTarget := "-", "-", "-"
		if len(wals) > 0 {
			wr := median(wals) / raw
			walCol, walRatio = spread(wals), fmt.Sprintf("%.2f", wr)
			if st.perTx == 100 {
				walTarget = "≥ 1.00"
				sec.checks = append(sec.checks, check{
					what:     fmt.Sprintf("WAL mode save path / raw pgx (events + outbox rows), %d events/tx, c=%d", st.perTx, st.concurrency),
					measured: fmt.Sprintf("%.2f× (%s vs %s events/s, medians)", wr, rate(median(wals)), rate(raw)),
					target:   "≥ 1.00×", pass: wr >= 1.0,
				})
			}
			e.say("  %d/tx c=%d: WAL mode %s/s, %.2f of raw", st.perTx, st.concurrency, rate(median(wals)), wr)
		}
		t.add(fmt.Sprint(st.perTx), fmt.Sprint(st.concurrency), spread(fulls), spread(raws), fmt.Sprintf("%.2f", ratio), "≥ 0.90",
			fmt.Sprintf("%.1f / %.1f", median(fullCPU), median(rawCPU)), walCol, walRatio, walTarget)
		sec.checks = append(sec.checks, check{
			what:     fmt.Sprintf("save path / raw pgx, %d event(s)/tx, c=%d", st.perTx, st.concurrency),
			measured: fmt.Sprintf("%.2f× (%s vs %s events/s, medians)", ratio, rate(full), rate(raw)),
			target:   "≥ 0.90×", pass: ratio >= 0.9,
		})
		points = append(points, point{st.concurrency, full, raw, st.perTx})
		e.say("  %d/tx c=%d: full %s/s raw %s/s ratio %.2f", st.perTx, st.concurrency, rate(full), rate(raw), ratio)
	}
	sec.tables = append(sec.tables, t)

	var lines []series
	for i, perTx := range []int{1, 100} {
		var full, raw []xy
		for _, p := range points {
			if p.perTx == perTx {
				full = append(full, xy{float64(p.c), p.app})
				raw = append(raw, xy{float64(p.c), p.raw})
			}
		}
		if len(full) == 0 {
			continue
		}
		lines = append(lines,
			series{name: fmt.Sprintf("full path, %d event/tx", perTx), points: full, color: palette[i]},
			series{name: fmt.Sprintf("raw pgx, %d event/tx", perTx), points: raw, dashed: true, color: palette[i]})
	}
	svg := lineChart(chart{
		title: "W1: events/s against concurrency", xLabel: "concurrent writers (log scale)", yLabel: "events/s",
		xLog: true, series: lines,
	})
	sec.plots = append(sec.plots, plot{file: "w1-save-throughput.svg", title: "W1 throughput against concurrency", svg: svg})
	return sec, nil
}

// logicalWAL reports whether the server runs wal_level=logical, which
// the WAL outbox mode needs.
func logicalWAL(ctx context.Context, pool *pgxpool.Pool) (bool, error) {
	var level string
	if err := pool.QueryRow(ctx, `SHOW wal_level`).Scan(&level); err != nil {
		return false, fmt.Errorf("wal_level: %w", err)
	}
	return level == "logical", nil
}

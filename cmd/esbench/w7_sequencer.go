package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/eventstore"
	pgstore "github.com/esflow/esflow/pkg/eventstore/postgres"
)

// formerLayout is the events table as migrations 1 and 2 left it, before
// notification ids moved to their own table: the id was a column of the
// event row, with a unique index and a partial index of unnumbered rows.
const formerLayout = `CREATE TABLE events (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sequence_id uuid NOT NULL,
    position bigint NOT NULL,
    topic text NOT NULL,
    data bytea NOT NULL,
    tx_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
    notification_id bigint,
    CONSTRAINT events_stream_key UNIQUE (sequence_id, position)
);
CREATE UNIQUE INDEX events_nid_key ON events (notification_id);
CREATE INDEX events_pending_idx ON events (seq) WHERE notification_id IS NULL`

// formerStep is the former sequencer's step: it numbered rows by
// rewriting them.
const formerStep = `WITH pending AS (
    SELECT p.seq, row_number() OVER (ORDER BY p.seq) AS rn
    FROM (SELECT seq FROM events WHERE notification_id IS NULL ORDER BY seq LIMIT 10000) p
), base AS (
    SELECT coalesce(max(notification_id), 0) AS top FROM events
)
UPDATE events t SET notification_id = base.top + pending.rn
FROM pending, base WHERE t.seq = pending.seq`

// layoutCost is what writing n events cost in one layout.
type layoutCost struct {
	name                       string
	walPerEvent                float64 // bytes
	heapPerEvent, idxPerEvent  float64 // events table: heap, its indexes
	notifPerEvent              float64 // notifications table with indexes
	deadTuples                 int64   // in the events table, -1 unknown
	eventsPerSecond, wallClock float64
}

func runSequencer(ctx context.Context, e *env) (*section, error) {
	n := e.scale.seqEvents
	sec := &section{setup: []string{
		fmt.Sprintf("Write cost: %d events of %d-byte payloads, one per transaction, appended by 8 concurrent `Store.Append` callers into a fresh database per layout, the sequencer (if any) running beside them as in production. WAL is `pg_current_wal_lsn()` before the first append and after the last event is numbered; sizes are `pg_relation_size` / `pg_indexes_size`; dead tuples from `pgstattuple`.", n, payloadSize),
		"Layouts: *no sequencing* (`NoSequencer`: nothing numbers, the floor); *narrow table* (this release: the background sequencer inserts (notification_id, seq) rows); *row update* (the former design, migrations 1-2: the sequencer's UPDATE sets `notification_id` on the event row, run in a loop woken by every append as readers used to).",
		fmt.Sprintf("Sequencer under load: the W1 save path (events + outbox, one event per transaction) at c=32 for %s, sampling every 100 ms the highest `seq` (≈ appended) and the highest notification id (numbered).", e.scale.seqLoadTime),
		fmt.Sprintf("Pacing: `Store.Append` of one event per transaction for %s per run at c=1 and c=8 with nothing numbering (`NoSequencer`), the sequencer stepping at every commit (`SequencerDelay` < 0) and paced (the default %s), %d rounds alternated, medians and ranges.", e.scale.seqPaceTime, pgstore.DefaultSequencerDelay, saveRounds),
		fmt.Sprintf("Catch-up: %d events appended with nothing numbering (100 per transaction), then one sequencing store opened and `Sequence` timed.", e.scale.seqBacklog),
	}}
	costs := make([]layoutCost, 0, 3)
	for _, layout := range []string{"none", "narrow", "update"} {
		c, err := measureLayout(ctx, e, layout, n)
		if err != nil {
			return nil, fmt.Errorf("layout %s: %w", layout, err)
		}
		costs = append(costs, c)
		e.say("  %s: WAL %.0f B/event, heap %.0f B/event, events indexes %.0f B/event, notifications %.0f B/event, dead tuples %d, %.0f events/s",
			c.name, c.walPerEvent, c.heapPerEvent, c.idxPerEvent, c.notifPerEvent, c.deadTuples, c.eventsPerSecond)
	}
	t := table{header: []string{"layout", "WAL B/event", "events heap B/event", "events indexes B/event", "notifications B/event", "dead tuples in events", "append events/s"}}
	for _, c := range costs {
		dead := "n/a"
		if c.deadTuples >= 0 {
			dead = fmt.Sprint(c.deadTuples)
		}
		t.add(c.name, fmt.Sprintf("%.0f", c.walPerEvent), fmt.Sprintf("%.0f", c.heapPerEvent), fmt.Sprintf("%.0f", c.idxPerEvent),
			fmt.Sprintf("%.0f", c.notifPerEvent), dead, rate(c.eventsPerSecond))
	}
	sec.tables = append(sec.tables, t)
	none, narrow, former := costs[0], costs[1], costs[2]
	sec.checks = append(sec.checks,
		check{
			what:     "events table gets no dead tuples from sequencing",
			measured: fmt.Sprintf("%d dead tuples after %d events (row update: %d)", narrow.deadTuples, n, former.deadTuples),
			target:   "0", pass: narrow.deadTuples == 0,
		},
		check{
			what: "WAL per event of sequencing (narrow table) vs the former row update",
			measured: fmt.Sprintf("+%.0f B/event vs +%.0f B/event over no sequencing (%.0f B)",
				narrow.walPerEvent-none.walPerEvent, former.walPerEvent-none.walPerEvent, none.walPerEvent),
			target: "less than the row update", pass: narrow.walPerEvent < former.walPerEvent,
		})

	pacing, err := sequencerPacing(ctx, e)
	if err != nil {
		return nil, fmt.Errorf("pacing: %w", err)
	}
	sec.tables = append(sec.tables, pacing)

	load, err := sequencerUnderLoad(ctx, e)
	if err != nil {
		return nil, fmt.Errorf("under load: %w", err)
	}
	sec.checks = append(sec.checks, check{
		what: "sequencer rate under W1 c=32 (numbered ≥ appended, backlog does not grow)",
		measured: fmt.Sprintf("appended %s/s, numbered %s/s; largest backlog %d events, %d left when the writers stopped, numbered %s later",
			rate(load.appended), rate(load.numbered), load.maxBacklog, load.finalBacklog, load.drain.Round(time.Millisecond)),
		target: "numbered ≥ appended", pass: load.numbered >= 0.99*load.appended && load.drain < time.Second,
	})
	e.say("  under W1 c=32: appended %s/s numbered %s/s, max backlog %d", rate(load.appended), rate(load.numbered), load.maxBacklog)

	catchUp, err := sequencerCatchUp(ctx, e)
	if err != nil {
		return nil, fmt.Errorf("catch-up: %w", err)
	}
	sec.notes = append(sec.notes, fmt.Sprintf("Catch-up: a backlog of %d events numbered in %s (%s events/s) by one sequencer with the default `SequencerBatch` of %d.",
		e.scale.seqBacklog, catchUp.Round(time.Millisecond), rate(float64(e.scale.seqBacklog)/catchUp.Seconds()), pgstore.DefaultSequencerBatch))
	e.say("  catch-up of %d events: %s", e.scale.seqBacklog, catchUp.Round(time.Millisecond))
	return sec, nil
}

// measureLayout appends n events into a fresh database laid out as
// layout ("none", "narrow", "update") and measures what they cost.
func measureLayout(ctx context.Context, e *env, layout string, n int) (layoutCost, error) {
	c := layoutCost{name: map[string]string{"none": "no sequencing", "narrow": "narrow table (this release)", "update": "row update (former)"}[layout], deadTuples: -1}
	db, err := e.pg.newDatabase(ctx, e.name("w7", layout), 16)
	if err != nil {
		return c, err
	}
	defer db.Drop(ctx)
	pool, err := db.pool(ctx)
	if err != nil {
		return c, err
	}
	defer pool.Close()
	cfg := pgstore.Config{NoSequencer: layout != "narrow"}
	if layout == "update" {
		if _, err := pool.Exec(ctx, formerLayout); err != nil {
			return c, fmt.Errorf("former layout: %w", err)
		}
	}
	store, err := pgstore.New(pool, cfg)
	if err != nil {
		return c, err
	}
	defer store.Close()
	if layout != "update" {
		if err := store.Migrate(ctx); err != nil {
			return c, err
		}
	}
	// The former sequencer, woken by every append (readers ran it).
	wake := make(chan struct{}, 1)
	stopFormer := make(chan struct{})
	formerDone := make(chan error, 1)
	if layout == "update" {
		go func() { formerDone <- formerLoop(ctx, pool, wake, stopFormer) }()
	} else {
		close(formerDone)
	}
	var walStart string
	if err := pool.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&walStart); err != nil {
		return c, err
	}
	data := []byte(`{"v":"` + strings.Repeat("x", payloadSize-8) + `"}`)
	const writers = 8
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := uuid.New()
			for pos := range uint64(n / writers) {
				r := eventstore.Record{StreamID: id, Position: pos, Topic: aggregate.TypeName(new(Account)), Data: data}
				if err := store.Append(ctx, []eventstore.Record{r}); err != nil {
					errs <- fmt.Errorf("writer %d: %w", w, err)
					return
				}
				select {
				case wake <- struct{}{}:
				default:
				}
			}
		}()
	}
	wg.Wait()
	c.wallClock = time.Since(start).Seconds()
	written := writers * (n / writers)
	c.eventsPerSecond = float64(written) / c.wallClock
	close(errs)
	if err := errors.Join(collect(errs)...); err != nil {
		return c, err
	}
	switch layout {
	case "narrow":
		if err := store.Sequence(ctx); err != nil {
			return c, err
		}
	case "update":
		close(stopFormer)
		if err := <-formerDone; err != nil {
			return c, err
		}
	}
	var wal, heap, idx int64
	err = pool.QueryRow(ctx, `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::bigint,
    pg_relation_size('events'), pg_indexes_size('events')`, walStart).Scan(&wal, &heap, &idx)
	if err != nil {
		return c, err
	}
	c.walPerEvent = float64(wal) / float64(written)
	c.heapPerEvent = float64(heap) / float64(written)
	c.idxPerEvent = float64(idx) / float64(written)
	if layout == "narrow" {
		var nb int64
		if err := pool.QueryRow(ctx, `SELECT pg_total_relation_size('events_notifications')`).Scan(&nb); err != nil {
			return c, err
		}
		c.notifPerEvent = float64(nb) / float64(written)
	}
	if _, err := pool.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pgstattuple`); err == nil {
		_ = pool.QueryRow(ctx, `SELECT dead_tuple_count FROM pgstattuple('events')`).Scan(&c.deadTuples)
	}
	return c, nil
}

// formerLoop runs the former sequencer step whenever woken, and until
// nothing is left once stop is closed.
func formerLoop(ctx context.Context, pool *pgxpool.Pool, wake <-chan struct{}, stop <-chan struct{}) error {
	for {
		stopping := false
		select {
		case <-wake:
		case <-stop:
			stopping = true
		case <-ctx.Done():
			return ctx.Err()
		}
		for {
			tag, err := pool.Exec(ctx, formerStep)
			if err != nil {
				return fmt.Errorf("former step: %w", err)
			}
			if tag.RowsAffected() < 10000 {
				break
			}
		}
		if stopping {
			return nil
		}
	}
}

func collect(errs <-chan error) []error {
	var out []error
	for err := range errs {
		out = append(out, err)
	}
	return out
}

type loadResult struct {
	appended, numbered       float64 // events/s over the load window
	maxBacklog, finalBacklog int64
	drain                    time.Duration
}

// sequencerUnderLoad runs W1's c=32 save load and watches the log keep up.
func sequencerUnderLoad(ctx context.Context, e *env) (loadResult, error) {
	var res loadResult
	db, err := e.pg.newDatabase(ctx, e.name("w7_load"), 34)
	if err != nil {
		return res, err
	}
	defer db.Drop(ctx)
	app, err := openApp(ctx, db.dsn, "esbench.w7", e.log)
	if err != nil {
		return res, err
	}
	defer app.Close()
	watch, err := db.pool(ctx)
	if err != nil {
		return res, err
	}
	defer watch.Close()
	sample := func() (appended, numbered int64, err error) {
		err = watch.QueryRow(ctx, `SELECT coalesce((SELECT max(seq) FROM events), 0),
    coalesce((SELECT max(notification_id) FROM events_notifications), 0)`).Scan(&appended, &numbered)
		return appended, numbered, err
	}
	loadCtx, stop := context.WithTimeout(ctx, e.scale.seqLoadTime)
	defer stop()
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			acc, err := newAccount()
			if err != nil {
				errs <- err
				return
			}
			for loadCtx.Err() == nil {
				if err := app.Save(loadCtx, acc); err != nil {
					if loadCtx.Err() == nil {
						errs <- err
					}
					return
				}
				if err := acc.record(1); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	a0, n0, err := sample()
	if err != nil {
		return res, err
	}
	begin := time.Now()
	var a1, n1 int64
	for loadCtx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
		a, nn, err := sample()
		if err != nil {
			return res, err
		}
		a1, n1 = a, nn
		res.maxBacklog = max(res.maxBacklog, a-nn)
	}
	took := time.Since(begin).Seconds()
	wg.Wait()
	close(errs)
	if err := errors.Join(collect(errs)...); err != nil {
		return res, err
	}
	res.appended = float64(a1-a0) / took
	res.numbered = float64(n1-n0) / took
	end := time.Now()
	final, numbered, err := sample()
	if err != nil {
		return res, err
	}
	res.finalBacklog = final - numbered
	for numbered < final {
		time.Sleep(time.Millisecond)
		if _, numbered, err = sample(); err != nil {
			return res, err
		}
	}
	res.drain = time.Since(end)
	return res, nil
}

// sequencerCatchUp times one sequencer numbering a backlog.
func sequencerCatchUp(ctx context.Context, e *env) (time.Duration, error) {
	db, err := e.pg.newDatabase(ctx, e.name("w7_backlog"), 8)
	if err != nil {
		return 0, err
	}
	defer db.Drop(ctx)
	writer, err := pgstore.Open(ctx, db.dsn, pgstore.Config{NoSequencer: true})
	if err != nil {
		return 0, err
	}
	defer writer.Close()
	if err := writer.Migrate(ctx); err != nil {
		return 0, err
	}
	data := []byte(`{"v":"` + strings.Repeat("x", payloadSize-8) + `"}`)
	for done := 0; done < e.scale.seqBacklog; done += 100 {
		id := uuid.New()
		batch := make([]eventstore.Record, 100)
		for i := range batch {
			batch[i] = eventstore.Record{StreamID: id, Position: uint64(i), Topic: "Recorded", Data: data}
		}
		if err := writer.Append(ctx, batch); err != nil {
			return 0, err
		}
	}
	start := time.Now()
	seq, err := pgstore.Open(ctx, db.dsn, pgstore.Config{})
	if err != nil {
		return 0, err
	}
	defer seq.Close()
	if err := seq.Sequence(ctx); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// sequencerPacing compares append throughput with no sequencer, an
// unpaced one and a paced one, alternating the variants in each round.
func sequencerPacing(ctx context.Context, e *env) (table, error) {
	t := table{header: []string{"concurrency", "no sequencing events/s", "unpaced events/s", "paced (default) events/s", "paced / none"}}
	variants := []pgstore.Config{{NoSequencer: true}, {SequencerDelay: -1}, {}}
	for _, writers := range []int{1, 8} {
		rates := make([][]float64, len(variants))
		for round := range saveRounds {
			for i, cfg := range variants {
				r, err := appendRate(ctx, e, cfg, writers, fmt.Sprintf("p%d_%d_%d", writers, round, i))
				if err != nil {
					return t, err
				}
				rates[i] = append(rates[i], r)
			}
		}
		t.add(fmt.Sprint(writers), spread(rates[0]), spread(rates[1]), spread(rates[2]), fmt.Sprintf("%.2f", median(rates[2])/median(rates[0])))
		e.say("  pacing c=%d: none %s/s, unpaced %s/s, paced %s/s", writers, rate(median(rates[0])), rate(median(rates[1])), rate(median(rates[2])))
	}
	return t, nil
}

// appendRate appends one event per transaction from writers goroutines
// for the pacing run time into a fresh database and returns events/s.
func appendRate(ctx context.Context, e *env, cfg pgstore.Config, writers int, name string) (float64, error) {
	db, err := e.pg.newDatabase(ctx, e.name("w7", name), writers+2)
	if err != nil {
		return 0, err
	}
	defer db.Drop(ctx)
	store, err := pgstore.Open(ctx, db.dsn, cfg)
	if err != nil {
		return 0, err
	}
	defer store.Close()
	if err := store.Migrate(ctx); err != nil {
		return 0, err
	}
	data := []byte(`{"v":"` + strings.Repeat("x", payloadSize-8) + `"}`)
	runCtx, stop := context.WithTimeout(ctx, e.scale.seqPaceTime)
	defer stop()
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	errs := make(chan error, writers)
	start := time.Now()
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := uuid.New()
			n := 0
			defer func() { mu.Lock(); total += n; mu.Unlock() }()
			for pos := uint64(0); runCtx.Err() == nil; pos++ {
				r := eventstore.Record{StreamID: id, Position: pos, Topic: "Recorded", Data: data}
				if err := store.Append(runCtx, []eventstore.Record{r}); err != nil {
					if runCtx.Err() == nil {
						errs <- err
					}
					return
				}
				n++
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	close(errs)
	if err := errors.Join(collect(errs)...); err != nil {
		return 0, err
	}
	return float64(total) / took.Seconds(), nil
}

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
)

// pyBackend is one backend of workload 6.
type pyBackend struct {
	name string
	dsn  string
}

func runPython(ctx context.Context, e *env) (*section, error) {
	sc := e.scale
	pgDB, err := e.pg.newDatabase(ctx, e.name("w6"), sc.pyWorkers)
	if err != nil {
		return nil, err
	}
	defer pgDB.Drop(ctx)
	dir, err := os.MkdirTemp("", "esbench-sqlite-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	backends := []pyBackend{
		{name: "postgres", dsn: pgDB.dsn},
		{name: "sqlite", dsn: "sqlite://" + filepath.Join(dir, "w6.db")},
	}

	sec := &section{setup: []string{
		"The seeds' Python library times its recorders with: (a) one aggregate, one event per save, saved sequentially (2,500 saves on PostgreSQL, 15,000 on SQLite), then as many gets of a one-event aggregate; (b) 60 transactions of 500 events each, every event a new aggregate, over 4 workers. Here the same through `application.Application` (no outbox, no encryption), on PostgreSQL and on a SQLite file (WAL, the backend's defaults).",
	}}
	ta := table{header: []string{"backend", "saves", "µs/save", "saves/s", "gets", "µs/get", "gets/s"}}
	tb := table{header: []string{"backend", "transactions × events", "workers", "took", "events/s"}}
	for _, b := range backends {
		app, err := openApp(ctx, b.dsn, "", e.log)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b.name, err)
		}
		n := sc.pySaves[b.name]
		save, get, err := pySequential(ctx, app, n)
		if err != nil {
			_ = app.Close()
			return nil, fmt.Errorf("%s: %w", b.name, err)
		}
		ta.add(b.name, fmt.Sprint(n), us(save), rate(float64(time.Second)/float64(save)), fmt.Sprint(n), us(get), rate(float64(time.Second)/float64(get)))
		took, err := pyConcurrent(ctx, app, sc.pyTx, sc.pyTxEvents, sc.pyWorkers)
		if cerr := app.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b.name, err)
		}
		events := sc.pyTx * sc.pyTxEvents
		tb.add(b.name, fmt.Sprintf("%d × %d", sc.pyTx, sc.pyTxEvents), fmt.Sprint(sc.pyWorkers), took.Round(time.Millisecond).String(), rate(float64(events)/took.Seconds()))
		e.say("  %s: %s µs/save, %s µs/get, %d×%d events in %s", b.name, us(save), us(get), sc.pyTx, sc.pyTxEvents, took.Round(time.Millisecond))
	}
	sec.tables = append(sec.tables, ta, tb)
	return sec, nil
}

func us(d time.Duration) string { return fmt.Sprintf("%.0f", float64(d)/float64(time.Microsecond)) }

// pySequential saves one aggregate n times, one event per save, then gets
// a one-event aggregate n times; it returns the mean time of each.
func pySequential(ctx context.Context, app *application.Application, n int) (save, get time.Duration, err error) {
	a, err := newAccount()
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	for i := range n {
		if i > 0 {
			if err := a.record(1); err != nil {
				return 0, 0, err
			}
		}
		if err := app.Save(ctx, a); err != nil {
			return 0, 0, fmt.Errorf("save %d: %w", i, err)
		}
	}
	save = time.Since(start) / time.Duration(n)

	one, err := newAccount()
	if err != nil {
		return 0, 0, err
	}
	if err := app.Save(ctx, one); err != nil {
		return 0, 0, err
	}
	repo := application.NewRepository(app.Store, func() *Account { return new(Account) })
	start = time.Now()
	for range n {
		got, err := repo.Get(ctx, one.ID())
		if err != nil {
			return 0, 0, fmt.Errorf("get: %w", err)
		}
		if got.Lines != 1 {
			return 0, 0, fmt.Errorf("get returned %d lines, want 1", got.Lines)
		}
	}
	return save, time.Since(start) / time.Duration(n), nil
}

// pyConcurrent runs tx transactions of perTx new aggregates (one event
// each) over workers goroutines.
func pyConcurrent(ctx context.Context, app *application.Application, tx, perTx, workers int) (time.Duration, error) {
	var next atomic.Int64
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	for range workers {
		g.Go(func() error {
			for next.Add(1) <= int64(tx) {
				aggs := make([]aggregate.Aggregate, perTx)
				for i := range aggs {
					a, err := newAccount()
					if err != nil {
						return err
					}
					aggs[i] = a
				}
				if err := app.Save(gctx, aggs...); err != nil {
					return fmt.Errorf("save %d aggregates: %w", perTx, err)
				}
			}
			return nil
		})
	}
	err := g.Wait()
	return time.Since(start), err
}

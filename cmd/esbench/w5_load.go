package main

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/esflow/esflow/pkg/application"
)

// timeLoads calls load repeatedly for about d (at least 3 times) and
// returns the mean time per call.
func timeLoads(ctx context.Context, d time.Duration, load func(context.Context) error) (time.Duration, error) {
	start := time.Now()
	n := 0
	for n < 3 || time.Since(start) < d {
		if err := load(ctx); err != nil {
			return 0, err
		}
		n++
	}
	return time.Since(start) / time.Duration(n), nil
}

// storeAccount saves an account of size events in batches of batch events
// through repo and returns its id.
func storeAccount(ctx context.Context, repo *application.Repository[*Account], size, batch int) (uuid.UUID, error) {
	a, err := newAccount()
	if err != nil {
		return uuid.Nil, err
	}
	if err := a.record(min(batch, size) - 1); err != nil {
		return uuid.Nil, err
	}
	for {
		if err := repo.Save(ctx, a); err != nil {
			return uuid.Nil, fmt.Errorf("save account of %d: %w", size, err)
		}
		left := size - int(a.Version())
		if left == 0 {
			return a.ID(), nil
		}
		if err := a.record(min(batch, left)); err != nil {
			return uuid.Nil, err
		}
	}
}

// rawLoad reads a stream's rows with plain pgx, without decoding them.
func rawLoad(pool *pgxpool.Pool, id uuid.UUID, size int) func(context.Context) error {
	pid := pgtype.UUID{Bytes: id, Valid: true}
	return func(ctx context.Context) error {
		rows, err := pool.Query(ctx, `SELECT position, data FROM events WHERE sequence_id = $1 ORDER BY position`, pid)
		if err != nil {
			return err
		}
		defer rows.Close()
		n := 0
		var pos int64
		var data []byte
		for rows.Next() {
			if err := rows.Scan(&pos, &data); err != nil {
				return err
			}
			n++
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if n != size {
			return fmt.Errorf("raw load read %d rows, want %d", n, size)
		}
		return nil
	}
}

func runLoad(ctx context.Context, e *env) (*section, error) {
	db, err := e.pg.newDatabase(ctx, e.name("w5"), 4)
	if err != nil {
		return nil, err
	}
	defer db.Drop(ctx)
	app, err := openApp(ctx, db.dsn, "", e.log)
	if err != nil {
		return nil, err
	}
	defer app.Close()
	pool, err := db.pool(ctx)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	newT := func() *Account { return new(Account) }
	plain := application.NewRepository(app.Store, newT)

	sec := &section{setup: []string{
		"`application.Repository.Get` of an account of N events on PostgreSQL (no encryption, no compression), replaying through `Apply` with hash-chain verification; with snapshots the repository was built with `SnapshotEvery(min(N, 100))` and the events saved in batches of that size, so the latest snapshot is at the head.",
		fmt.Sprintf("Each figure is the mean of repeated loads for about %s. Raw: plain pgx selecting the same stream's rows (position, data) without decoding.", e.scale.loadTime),
	}}
	t := table{header: []string{"events", "without snapshots ms", "with snapshots ms", "raw SELECT ms", "events/s replayed (without)"}}
	for _, size := range e.scale.loadSizes {
		every := min(size, 100)
		snap := application.NewRepository(app.Store, newT, application.SnapshotEvery(uint64(every)))
		plainID, err := storeAccount(ctx, plain, size, min(size, 1000))
		if err != nil {
			return nil, err
		}
		snapID, err := storeAccount(ctx, snap, size, every)
		if err != nil {
			return nil, err
		}
		check := func(repo *application.Repository[*Account], id uuid.UUID) func(context.Context) error {
			return func(ctx context.Context) error {
				a, err := repo.Get(ctx, id)
				if err != nil {
					return err
				}
				if a.Lines != size || int(a.Version()) != size {
					return fmt.Errorf("loaded %d lines at version %d, want %d", a.Lines, a.Version(), size)
				}
				return nil
			}
		}
		without, err := timeLoads(ctx, e.scale.loadTime, check(plain, plainID))
		if err != nil {
			return nil, fmt.Errorf("load %d without snapshots: %w", size, err)
		}
		with, err := timeLoads(ctx, e.scale.loadTime, check(snap, snapID))
		if err != nil {
			return nil, fmt.Errorf("load %d with snapshots: %w", size, err)
		}
		raw, err := timeLoads(ctx, e.scale.loadTime, rawLoad(pool, plainID, size))
		if err != nil {
			return nil, fmt.Errorf("raw load %d: %w", size, err)
		}
		t.add(fmt.Sprint(size), ms(without), ms(with), ms(raw), rate(float64(size)/without.Seconds()))
		e.say("  %d events: %s ms without snapshots, %s ms with, raw %s ms", size, ms(without), ms(with), ms(raw))
	}
	sec.tables = append(sec.tables, t)
	return sec, nil
}

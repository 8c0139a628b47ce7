package projection

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// RebuildConfig configures [Rebuild]. Zero fields take the defaults
// documented on them.
type RebuildConfig struct {
	// Source is where the events come from: StoreSource or KafkaSource.
	// Required.
	Source RebuildSource
	// Suffix names the shadow tables (table + Suffix) and the shadow's
	// tracking key (projection name + Suffix). Default "_rebuild".
	Suffix string
	// Runner configures the rebuild's runner: BatchSize, MaxAttempts,
	// RetryBackoff, Mapper (encrypted messages), Brokers, Dialer and
	// Transport (dead letters go to the live projection's dead-letter
	// topic), Logger, Hooks. GroupID and TableSuffix are ignored. Without
	// Brokers a poison event stops a rebuild from the store.
	Runner RunnerConfig
	// Progress, when set, receives the progress every ProgressEvery and
	// once per phase change. The rebuild also logs it at Info level.
	Progress func(RebuildProgress)
	// ProgressEvery is the progress interval. Default 1s.
	ProgressEvery time.Duration
	// KeepOld keeps the replaced live tables as table + "_old" (dropping
	// an earlier "_old" table) instead of dropping them.
	KeepOld bool
	// SwapAttempts bounds the swap transactions tried (a lock timeout, a
	// deadlock with the live runner or a handler failure in the last
	// events roll one back). Default 10.
	SwapAttempts int
	// LockTimeout bounds how long, on PostgreSQL, the swap waits for its
	// table locks before it rolls back and tries again (a waiting
	// exclusive lock queues the live model's readers behind it). Default 5s.
	LockTimeout time.Duration
	// SwapReadTimeout bounds the reading of the source's last events
	// inside the swap transaction, while it holds its locks; past it the
	// attempt rolls back and is tried again. Default 30s.
	SwapReadTimeout time.Duration
}

// Rebuild phases reported in [RebuildProgress].
const (
	PhaseCatchUp = "catch-up" // reading the source into the shadow tables
	PhaseSwap    = "swap"     // the swap transaction
	PhaseDone    = "done"
)

// RebuildProgress is a snapshot of a rebuild in progress.
type RebuildProgress struct {
	Projection string
	Phase      string
	// Counters of the shadow runner.
	Applied, Duplicates, Gaps, DeadLettered uint64
	// Position and Target are how far the source has been read and
	// where its end was when last observed: notification ids for the
	// store, offsets summed over the partitions for Kafka.
	Position, Target int64
	// Rate is events applied per second since the rebuild began.
	Rate    float64
	Elapsed time.Duration
}

// RebuildResult is what a rebuild did.
type RebuildResult struct {
	Projection                              string
	Applied, Duplicates, Gaps, DeadLettered uint64
	// Position is where the source was read to in the swap transaction.
	Position int64
	// SwapAttempts counts the swap transactions tried.
	SwapAttempts int
	Took         time.Duration
}

// ErrRebuildBehind is matched by the error of a rebuild whose shadow read
// model has not applied everything the live one has (for some
// aggregate, a lower version): the source lacks events the live model
// saw — a topic past its retention, or a store that is not the one
// feeding the topics. The swap is refused and the live model kept.
var ErrRebuildBehind = errors.New("projection: rebuilt read model is behind the live one")

// errSwapRetry rolls a swap attempt back so that the events it could not
// apply in the swap transaction (a handler failure, an undecodable
// message) go through the ordinary retry and dead-letter path first.
var errSwapRetry = errors.New("projection: rebuild: last events need the ordinary path")

// Rebuild builds p's read model from scratch into shadow tables (table +
// cfg.Suffix) from cfg.Source, then swaps them in for the live tables in
// one transaction, together with the projection's tracking, gap and
// dead-letter rows. A runner of p may keep running, here or in other
// processes, during and after the rebuild: the swap transaction locks
// the live and shadow tables and the tracking table, applies the events
// that arrived since the catch-up, checks that the shadow is at or ahead
// of the live tracking for every aggregate (else ErrRebuildBehind), and
// renames. The live runner's later transactions then see the rebuilt
// tables and tracking, so it neither applies an event twice nor misses
// one (DESIGN.md, "Rebuilds"). Only one rebuild of a projection may run
// at a time; leftovers of an interrupted one are dropped when the next
// begins.
func Rebuild(ctx context.Context, db DB, p Projection, cfg RebuildConfig) (RebuildResult, error) {
	started := time.Now()
	if db == nil || p == nil || cfg.Source == nil {
		return RebuildResult{}, errors.New("projection: Rebuild needs a DB, a Projection and a Source")
	}
	setDefault(&cfg.Suffix, "_rebuild")
	setDefault(&cfg.ProgressEvery, time.Second)
	setDefault(&cfg.SwapAttempts, 10)
	setDefault(&cfg.LockTimeout, 5*time.Second)
	setDefault(&cfg.SwapReadTimeout, 30*time.Second)
	rc := cfg.Runner
	rc.TableSuffix, rc.GroupID = cfg.Suffix, ""
	shadow, err := newRunner(db, p, rc, false)
	if err != nil {
		return RebuildResult{}, err
	}
	defer shadow.closeDLQ()
	live, err := NewTables(p.Tables(), "")
	if err != nil {
		return RebuildResult{}, fmt.Errorf("projection %s: %w", p.Name(), err)
	}
	if cfg.KeepOld {
		if _, err := NewTables(p.Tables(), "_old"); err != nil {
			return RebuildResult{}, fmt.Errorf("projection %s: %w", p.Name(), err)
		}
	}
	for _, step := range []func() error{
		func() error { return setupSchema(ctx, db, p, live) },
		func() error { return resetShadow(ctx, db, p, cfg.Suffix) },
		func() error { return setupSchema(ctx, db, p, shadow.tables) },
	} {
		for attempt := 1; ; attempt++ {
			err := step()
			if err == nil {
				break
			}
			if !isBusy(err) || attempt >= cfg.SwapAttempts || !sleep(ctx, shadow.backoff(attempt)) {
				return RebuildResult{}, err
			}
		}
	}
	f, err := cfg.Source.open(ctx, shadow)
	if err != nil {
		return RebuildResult{}, err
	}
	defer func() { _ = f.close() }()
	pr := &progress{cfg: cfg, r: shadow, f: f, name: p.Name(), start: started}

	shadow.log.Info("rebuild started", "suffix", cfg.Suffix)
	res := RebuildResult{Projection: p.Name()}
	for attempt := 1; ; attempt++ {
		res.SwapAttempts = attempt
		// Catch up outside the swap transaction first, so that the one
		// holding the locks has little left to apply.
		if err := f.mark(ctx); err != nil {
			return res, err
		}
		if err := catchUp(ctx, shadow, f, pr); err != nil {
			return res, fmt.Errorf("projection %s: rebuild: %w", p.Name(), err)
		}
		pr.report(PhaseSwap, true)
		err := swap(ctx, db, shadow, live, f, cfg)
		if err == nil {
			break
		}
		if errors.Is(err, ErrRebuildBehind) || ctx.Err() != nil || attempt >= cfg.SwapAttempts {
			return res, fmt.Errorf("projection %s: rebuild: swap: %w", p.Name(), err)
		}
		shadow.log.Warn("rebuild: swap rolled back; catching up and trying again", "attempt", attempt, "error", err)
		if !sleep(ctx, shadow.backoff(attempt)) {
			return res, ctx.Err()
		}
	}
	st := shadow.Status()
	res.Applied, res.Duplicates, res.Gaps, res.DeadLettered = st.Applied, st.Duplicates, st.Gaps, st.DeadLettered
	res.Position, _ = f.position()
	res.Took = time.Since(started)
	pr.report(PhaseDone, true)
	shadow.log.Info("rebuild swapped in", "applied", res.Applied, "took", res.Took)
	return res, nil
}

// catchUp applies the feed up to its mark through the ordinary path
// (batches, retries, dead letters).
func catchUp(ctx context.Context, r *Runner, f feed, pr *progress) error {
	for {
		items, err := f.next(ctx, r.cfg.BatchSize)
		if err != nil {
			return err
		}
		if len(items) == 0 {
			return nil
		}
		if _, err := r.processItems(ctx, ctx, items); err != nil {
			return err
		}
		pr.report(PhaseCatchUp, false)
	}
}

type progress struct {
	cfg   RebuildConfig
	r     *Runner
	f     feed
	name  string
	start time.Time
	last  time.Time
	phase string
}

func (p *progress) report(phase string, force bool) {
	now := time.Now()
	if !force && phase == p.phase && now.Sub(p.last) < p.cfg.ProgressEvery {
		return
	}
	p.last, p.phase = now, phase
	st := p.r.Status()
	pos, target := p.f.position()
	el := now.Sub(p.start)
	pg := RebuildProgress{
		Projection: p.name, Phase: phase, Applied: st.Applied, Duplicates: st.Duplicates, Gaps: st.Gaps,
		DeadLettered: st.DeadLettered, Position: pos, Target: target, Elapsed: el,
	}
	if s := el.Seconds(); s > 0 {
		pg.Rate = float64(st.Applied) / s
	}
	p.r.log.Info("rebuild progress", "phase", phase, "applied", pg.Applied, "duplicates", pg.Duplicates,
		"dead_lettered", pg.DeadLettered, "position", pos, "target", target, "events_per_second", int64(pg.Rate),
		"elapsed", el.Round(time.Millisecond))
	if p.cfg.Progress != nil {
		p.cfg.Progress(pg)
	}
}
